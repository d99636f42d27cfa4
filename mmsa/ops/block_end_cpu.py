"""The block end's four passes as C++ kernels on CPU: BatchNorm, a plane
gate (SA, SE, ECA), the residual add and the ReLU.

The kernels (``csrc/block_end_cpu.cpp``) are built into the same extension
as SA's kernel (``sa_cpu_kernel.py`` loads it); what each pass computes is
:class:`~mmsa.ops.block_end_fused.BlockEndKernels`, the host around them
``block_end_fused.py``. They take contiguous float32/float64 tensors
(a channels_last ``z`` is made contiguous once, before the passes).
"""
from typing import Optional

import torch

from .block_end_fused import BlockEndKernels, block_end_fused
from .block_end_reference import PlaneGate
from .norm_fold import NormFold
from .sa_cpu_kernel import _ext, sa_cpu_unsupported

__all__ = ['block_end_cpu', 'block_end_cpu_unsupported', 'KERNELS']

Tensor = torch.Tensor


def block_end_cpu_unsupported(z: Tensor) -> Optional[str]:
    """Why :func:`block_end_cpu` cannot take ``z``, or None when it can."""
    if _ext is None:  # one extension holds both kernels
        return sa_cpu_unsupported(z)
    if z.device.type != 'cpu':
        return (f'the block-end CPU kernel runs on CPU, got a '
                f'{z.device.type} input')
    if z.dtype not in (torch.float32, torch.float64):
        return (f'the block-end CPU kernel takes float32/float64, got '
                f'{z.dtype}')
    return None


def _contiguous(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    return None if t is None else t.to(dtype).contiguous()


def moments(z: Tensor):
    return _ext.block_end_moments(z)


def apply(z: Tensor, identity: Optional[Tensor], shift: Tensor, mean: Tensor,
          a: Optional[Tensor], m: Tensor, p: Optional[Tensor], q: Tensor,
          shuffle: int) -> Tensor:
    return _ext.block_end_apply(z, _contiguous(identity, z.dtype), shift,
                                mean, a, m, p, q, shuffle)


def gradient_sums(grad_y: Tensor, z: Tensor, y: Optional[Tensor],
                  shift: Tensor, mean: Tensor, a: Optional[Tensor],
                  m: Tensor, p: Optional[Tensor], q: Tensor,
                  shuffle: int) -> Tensor:
    return _ext.block_end_sums(_contiguous(grad_y, z.dtype), z,
                               _contiguous(y, z.dtype), shift, mean, a, m, p,
                               q, shuffle)


def input_gradients(grad_y: Tensor, z: Tensor, y: Optional[Tensor],
                    shift: Tensor, mean: Tensor, a: Optional[Tensor],
                    m: Tensor, p: Optional[Tensor], q: Tensor, alpha: Tensor,
                    beta: Tensor, shuffle: int, write_identity: bool):
    return _ext.block_end_input_grads(_contiguous(grad_y, z.dtype), z,
                                      _contiguous(y, z.dtype), shift, mean,
                                      a, m, p, q, alpha, beta, shuffle,
                                      write_identity)


#: The passes, for the fused host (``block_end_fused.py``).
KERNELS = BlockEndKernels(moments, apply, gradient_sums, input_gradients)


def block_end_cpu(z: Tensor, identity: Optional[Tensor],
                  fold: Optional[NormFold], norm: Optional[torch.nn.Module],
                  gate: PlaneGate) -> Tensor:
    """``relu(gate(BN(z)) + identity)`` (without an identity: no add, no
    ReLU; without a fold: no norm) by the C++ kernels, a contiguous tensor
    of ``z``'s dtype. Callers check :func:`block_end_cpu_unsupported`
    first."""
    return block_end_fused(KERNELS, z.contiguous(), identity, fold, norm,
                           gate)
