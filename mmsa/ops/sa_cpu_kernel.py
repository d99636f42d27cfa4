"""Shuffle Attention's C++ CPU kernel: its loader and entry point.

The kernel (``csrc/shuffle_attention.cpp``) is a CPU C++ extension built at
install time. It runs SA as one statistics pass and one element-wise pass
per (sample, channel) plane, the channel shuffle folded into the output
index, and with the block's identity the residual add and the ReLU in the
same pass; its backward is one pass for two per-plane sums and one writing
the input gradient. It takes SA alone and SA after a norm other than
BatchNorm (the norm runs in PyTorch first); after a BatchNorm the block
end's kernels, in the same extension, fold the norm in (``block_end_cpu.py``).

One argument order everywhere: ``(x, residual, cweight, cbias, sweight,
sbias, gn_weight, gn_bias, groups, eps)``.
"""
import importlib
from typing import Optional

import torch

from ..utils.compat import is_autocast_enabled

try:
    # (``from . import`` would blame a circular import for a missing file)
    _ext = importlib.import_module('._sa_cpu', __package__)
    _EXT_ERROR = ''
except ImportError as err:  # not built: no compiler, isolated build, ...
    _ext = None
    _EXT_ERROR = str(err)

__all__ = ['sa_cpu', 'sa_cpu_if_supported', 'sa_cpu_unsupported',
           'cpu_kernel_isa']

Tensor = torch.Tensor


def cpu_kernel_isa() -> Optional[str]:
    """The instruction set the kernel's float32 code uses (``'avx512'``,
    ``'avx2'``, ...), or None where it is not built."""
    return _ext.isa() if _ext is not None else None


def sa_cpu_unsupported(x: Tensor) -> Optional[str]:
    """Why :func:`sa_cpu` cannot take ``x``, or None when it can (the rule
    :func:`sa_cpu_if_supported` applies in C++)."""
    if _ext is None:
        return ('the SA CPU kernel mmsa.ops._sa_cpu is not built '
                f'({_EXT_ERROR}); reinstall with `pip install '
                '--no-build-isolation -e .` and a C++ compiler')
    if x.device.type != 'cpu':
        return f'the SA CPU kernel runs on CPU, got a {x.device.type} input'
    if x.dim() == 4 and x.shape[2] * x.shape[3] == 0:
        return (f'the SA CPU kernel needs planes of at least one value, got '
                f'H x W = {x.shape[2]} x {x.shape[3]}')
    if x.dtype in (torch.float32, torch.float64):
        return None
    if is_autocast_enabled('cpu'):  # the kernel casts to float32
        return None
    return f'the SA CPU kernel takes float32/float64, got {x.dtype}'


def sa_cpu_if_supported(x: Tensor, residual: Optional[Tensor],
                        cweight: Tensor, cbias: Tensor, sweight: Tensor,
                        sbias: Tensor, gn_weight: Tensor, gn_bias: Tensor,
                        groups: int, eps: float = 1e-5) -> Optional[Tensor]:
    """:func:`sa_cpu` where the kernel takes ``x``, else None (then
    :func:`sa_cpu_unsupported` says why). The check runs in C++, in the
    same call as the kernel: the per-call path."""
    if _ext is None:
        return None
    return _ext.fused_if_supported(x, residual, cweight, cbias, sweight,
                                   sbias, gn_weight, gn_bias, groups, eps)


def sa_cpu(x: Tensor, residual: Optional[Tensor], cweight: Tensor,
           cbias: Tensor, sweight: Tensor, sbias: Tensor, gn_weight: Tensor,
           gn_bias: Tensor, groups: int, eps: float = 1e-5) -> Tensor:
    """SA of ``x`` (with ``residual``: ``relu(SA(x) + residual)``) by the
    C++ kernel.

    Takes float32/float64 CPU input of any memory format (channels_last is
    made contiguous first) and returns a contiguous tensor; under CPU
    autocast the inputs are cast to float32 and it runs outside autocast.
    Other input raises ValueError with :func:`sa_cpu_unsupported`'s reason.
    Differentiable once: differentiating its gradients raises. In profiles
    the forward is ``mmsa::sa_fused`` and the backward
    ``CppNode<mmsa::SAFused>``.
    """
    out = sa_cpu_if_supported(x, residual, cweight, cbias, sweight, sbias,
                              gn_weight, gn_bias, groups, eps)
    if out is None:
        raise ValueError(f'sa_cpu: {sa_cpu_unsupported(x)}; the reference '
                         f"path (impl='reference') takes any input")
    return out
