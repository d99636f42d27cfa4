"""Feature checks that hold from torch 2.1 to the newest release.

Each helper answers by capability (the attribute exists), never by version
strings, so a backport or a nightly is judged by what it has.
"""
import torch

__all__ = ['is_compiling', 'is_exporting', 'is_autocast_enabled']

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
