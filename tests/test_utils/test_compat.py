"""Capability checks that keep mmsa working from torch 2.1 / numpy 1.26 to
the newest releases."""
import importlib
import pickle
import pickletools

import numpy as np
import pytest
import torch

from mmsa.utils import compat


def _pickled_globals(obj) -> list:
    """(module, name) of every global a protocol-2 pickle of obj names."""
    return [
        tuple(arg.split(' '))
        for op, arg, _ in pickletools.genops(pickle.dumps(obj, protocol=2))
        if op.name == 'GLOBAL'
    ]


@pytest.mark.parametrize('value,index', [(np.arange(3.0), 0),
                                         (np.float32(1.5), 1)])
def test_numpy_pickle_functions_are_the_ones_numpy_pickles_name(value, index):
    found = [
        getattr(importlib.import_module(module), name)
        for module, name in _pickled_globals(value)
        if module.startswith('numpy') and 'multiarray' in module
    ]
    assert compat.numpy_pickle_functions()[index] in found


@pytest.mark.parametrize('package,old', [('torch', '2.0.1'),
                                         ('numpy', '1.24.4')])
def test_too_old_torch_or_numpy_stops_import_with_one_line(
        monkeypatch, package, old):
    if package == 'torch':
        monkeypatch.setattr(torch, '__version__',
                            torch.torch_version.TorchVersion(old))
    else:
        monkeypatch.setattr(np, '__version__', old)
    with pytest.raises(ImportError) as err:
        compat.check_floors()
    msg = str(err.value)
    assert f'found {old}' in msg and f"pip install '{package}>=" in msg
    assert '\n' not in msg
