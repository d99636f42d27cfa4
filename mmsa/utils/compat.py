"""Feature checks that hold from torch 2.1 to the newest release.

Each helper answers by capability (the attribute exists, the call works),
never by version strings, so a backport or a nightly is judged by what it
has.
"""
import functools
import io
from typing import Callable, Tuple

import numpy as np
import torch

__all__ = [
    'is_compiling', 'is_exporting', 'is_autocast_enabled',
    'safe_globals_accept_names', 'numpy_pickle_functions', 'check_floors'
]

if hasattr(torch, 'compiler') and hasattr(torch.compiler, 'is_compiling'):
    _is_compiling = torch.compiler.is_compiling  # torch >= 2.3
else:  # torch 2.1/2.2
    import torch._dynamo
    _is_compiling = torch._dynamo.is_compiling


def is_compiling() -> bool:
    """Whether dynamo is tracing the caller (``torch.compile``)."""
    return _is_compiling()


def is_exporting() -> bool:
    """Whether the caller runs under ``torch.onnx.export`` or TorchScript
    tracing/scripting, where custom kernels must step aside for the
    composition of standard ops that the exporter can translate."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    onnx = getattr(torch, 'onnx', None)
    return bool(onnx is not None and onnx.is_in_onnx_export())


def is_autocast_enabled(device_type: str) -> bool:
    """``torch.is_autocast_enabled(device_type)`` on every torch (2.4 took
    the argument; 2.1 has one function per device)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        if device_type == 'cpu':
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


def _names_probe() -> bool:
    """What :func:`safe_globals_accept_names` unpickles."""
    return True


class _NamesProbe:
    """Pickles as a call of ``_names_probe``: one allow-listed global."""

    def __reduce__(self):
        return _names_probe, ()


@functools.lru_cache(maxsize=None)
def safe_globals_accept_names() -> bool:
    """Whether ``torch.load(weights_only=True)`` can allow-list an object
    under a name given with it: ``(obj, 'module.name')`` entries of
    ``torch.serialization.safe_globals`` (torch 2.6; 2.4 has no context
    manager, and 2.5 takes the entries but fails every later load with
    "'tuple' object has no attribute '__module__'").

    Answered by loading a one-global pickle from memory, once.
    """
    serialization = torch.serialization
    if not hasattr(serialization, 'safe_globals'):
        return False
    buffer = io.BytesIO()
    torch.save(_NamesProbe(), buffer)
    buffer.seek(0)
    name = f'{_names_probe.__module__}.{_names_probe.__name__}'
    try:
        with serialization.safe_globals([(_names_probe, name)]):
            return torch.load(buffer, weights_only=True) is True
    except Exception:  # any refusal or error means: not supported
        return False


def numpy_pickle_functions() -> Tuple[Callable, Callable]:
    """The functions numpy's pickles call to rebuild an array and a scalar
    (``multiarray._reconstruct`` and ``multiarray.scalar``).

    Taken from numpy's own ``__reduce__`` rather than from a module path:
    numpy 2 moved them to ``numpy._core``, and numpy 1.26 has a
    ``numpy._core`` stub without ``multiarray`` (so ``hasattr(np, '_core')``
    tells the two apart only until opencv imports the stub).
    """
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    return reconstruct, scalar


# The oldest releases CI tests (requirements/compat.txt); setup.py states
# the same floors.
TORCH_FLOOR = '2.1'
NUMPY_FLOOR = '1.26.0'


def check_floors() -> None:
    """Stop ``import mmsa`` with one line where torch or numpy is older than
    anything mmsa is tested with, instead of an AttributeError later.

    Raises:
        ImportError: Naming the installed version and the upgrade.
    """
    if torch.__version__ < TORCH_FLOOR:  # TorchVersion compares releases
        raise ImportError(
            f'mmsa needs torch >= {TORCH_FLOOR}, found {torch.__version__}; '
            f"upgrade it: pip install 'torch>={TORCH_FLOOR}'")
    if np.lib.NumpyVersion(np.__version__) < NUMPY_FLOOR:
        raise ImportError(
            f'mmsa needs numpy >= {NUMPY_FLOOR}, found {np.__version__}; '
            f"upgrade it: pip install 'numpy>={NUMPY_FLOOR}'")
