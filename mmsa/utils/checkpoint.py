"""Load checkpoints without running code from them.

Every ``torch.load`` in mmsa goes through :func:`safe_load`
(``weights_only=True``): tensors, containers and plain Python values load,
while a file that needs arbitrary unpickling (an object whose ``__reduce__``
names a function to call) is refused before anything in it runs.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only`` and torch >= 2.6
defaults to ``weights_only=True``, so mmengine's own checkpoints (``--resume``)
fail on the message hub's ``HistoryBuffer`` and the numpy values inside it.
:func:`allow_mmengine_checkpoint_types` allow-lists exactly those types; it
runs when mmsa is imported. ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` would also
make resume work, but switches the protection off for every file.
"""
import os.path as osp
import pickle
import re
import types
from typing import Any, Collection, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

__all__ = [
    'UnsafeCheckpointError', 'safe_load', 'checkpoint_keys',
    'allow_mmengine_checkpoint_types', 'attention_modules_without_weights'
]

_RESAVE_HINT = (
    'To use it, re-save its tensors in an environment you trust:\n'
    "    ckpt = torch.load('{path}', weights_only=False)  # runs its code\n"
    "    sd = ckpt.get('state_dict', ckpt)\n"
    "    torch.save({{'state_dict': {{k: v for k, v in sd.items()\n"
    "                               if isinstance(v, torch.Tensor)}}}},\n"
    "               'clean.pth')\n"
    'and load clean.pth instead.')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint that ``torch.load(weights_only=True)`` refuses."""


def safe_load(path: str, map_location: Any = 'cpu') -> Any:
    """``torch.load(path, weights_only=True)`` with an explanatory error.

    Args:
        path (str): A local checkpoint file.
        map_location: As in :func:`torch.load`. Defaults to ``'cpu'``.

    Returns:
        The loaded object (usually a dict of tensors or a dict holding one).

    Raises:
        UnsafeCheckpointError: The file needs arbitrary code execution to be
            unpickled; nothing from it was executed.
        OSError: The file is missing or is no torch checkpoint.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not re.search(r'GLOBAL|allowlisted|unrecognized function',
                         str(err)):
            raise OSError(f'{path} is not a readable torch checkpoint: '
                          f'{err}') from err
        reason = re.search(r'WeightsUnpickler error:\s*(.+?)\n\n', str(err),
                           re.S)
        # torch's advice to allow-list the global is left out on purpose.
        detail = reason.group(1).split(' Please use')[0].strip(' .') \
            if reason else ''
        what = ('it holds more than tensors, containers and plain values' +
                (f' ({detail})' if detail else ''))
        raise UnsafeCheckpointError(
            f'Refusing to load {path}: {what}. Unpickling it would run '
            f'arbitrary code from the file, so mmsa loads checkpoints only '
            f'with torch.load(weights_only=True) and nothing from it was '
            f'executed. ' + _RESAVE_HINT.format(path=path)) from err
    except (KeyError, EOFError, RuntimeError) as err:
        # torch's own errors for files that are no checkpoint at all
        raise OSError(f'{path} is not a readable torch checkpoint '
                      f'({type(err).__name__}: {err})') from err


def _state_dict_of(checkpoint: Any) -> Dict[str, Any]:
    if isinstance(checkpoint, dict) and isinstance(
            checkpoint.get('state_dict'), dict):
        return checkpoint['state_dict']
    return checkpoint if isinstance(checkpoint, dict) else {}


def checkpoint_keys(checkpoint: str,
                    prefix: Optional[str] = None,
                    map_location: Any = 'cpu') -> List[str]:
    """The state-dict keys mmengine's ``Pretrained`` init would load.

    Mirrors ``mmengine.model.PretrainedInit``: the ``state_dict`` entry if
    there is one, ``module.`` stripped when no ``prefix`` is given, otherwise
    only the keys under ``prefix`` with it stripped.

    Args:
        checkpoint (str): A local file (loaded with :func:`safe_load`) or any
            address mmengine understands (``open-mmlab://``, ``https://``).
        prefix (str, optional): As ``Pretrained``'s ``prefix``, e.g.
            ``'backbone.'``. Defaults to None.
        map_location: As in :func:`torch.load`. Defaults to ``'cpu'``.
    """
    if osp.isfile(checkpoint):
        loaded = safe_load(checkpoint, map_location)
    else:
        from mmengine.runner.checkpoint import CheckpointLoader
        loaded = CheckpointLoader.load_checkpoint(checkpoint, map_location)
    keys = list(_state_dict_of(loaded))
    if prefix is None:
        return [re.sub(r'^module\.', '', k) for k in keys]
    if not prefix.endswith('.'):
        prefix += '.'
    return [k[len(prefix):] for k in keys if k.startswith(prefix)]


def attention_modules_without_weights(model: nn.Module,
                                      keys: Collection[str]) -> List[str]:
    """Paths of the mmsa attention modules in ``model`` (``layer1.0.sa``,
    ``bam1``) none of whose tensors are among ``keys``."""
    from ..registry import ATTENTIONS
    classes = tuple(ATTENTIONS.values())
    keys = set(keys)
    found: List[str] = []
    for path, module in model.named_modules():
        if not isinstance(module, classes) or any(
                path.startswith(f'{p}.') for p in found):
            continue
        names = [
            f'{path}.{k}' for k in module.state_dict()
            if not k.endswith('num_batches_tracked')
        ]
        if names and not keys.intersection(names):
            found.append(path)
    return found


def _history_buffer_attribute(obj: Any, name: str) -> Any:
    """The ``getattr`` that mmengine checkpoints need, and only that one.

    ``HistoryBuffer`` pickles its statistics methods (``min``, ``mean``...)
    as ``getattr(HistoryBuffer, 'min')``; any other use is refused.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    attr = getattr(HistoryBuffer, name, None) if isinstance(name, str) \
        else None
    if obj is not HistoryBuffer or name.startswith('_') or not isinstance(
            attr, types.FunctionType):
        raise pickle.UnpicklingError(
            f'the getattr mmsa allowlisted resolves only HistoryBuffer '
            f'methods, not getattr({obj!r}, {name!r})')
    return attr


def allow_mmengine_checkpoint_types() -> None:
    """Allow-list the types in mmengine's checkpoints for ``weights_only``.

    A Runner checkpoint holds, besides tensors and plain values, the message
    hub's ``HistoryBuffer`` objects, their numpy arrays and scalars (the
    arrays' reconstructor, ``ndarray``, ``dtype`` and the numeric dtype
    classes) and ``getattr(HistoryBuffer, <statistics method>)``. Nothing
    that can call other functions is added. Idempotent.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    multiarray = np._core.multiarray if hasattr(np, '_core') \
        else np.core.multiarray
    numeric = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
               np.uint16, np.uint32, np.uint64, np.float16, np.float32,
               np.float64, np.complex64, np.complex128)
    safe = [
        HistoryBuffer, np.ndarray, np.dtype,
        (_history_buffer_attribute, 'builtins.getattr')
    ]
    safe += [type(np.dtype(t)) for t in numeric]
    # numpy 2 pickles under numpy._core, numpy 1 under numpy.core.
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        safe += [(multiarray._reconstruct, f'{module}._reconstruct'),
                 (multiarray.scalar, f'{module}.scalar')]
    torch.serialization.add_safe_globals(safe)
