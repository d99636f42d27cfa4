"""Fused kernels with their reference implementations beside them.

:func:`block_end` is the one op: ``relu(attention(norm(z)) + identity)``,
the end of every mmsa ResNet block, and without a norm and an identity the
forward of every attention. It picks the Triton kernels on CUDA, the C++
kernels on CPU (SA, SE and ECA after a BatchNorm; SA alone) and the PyTorch
composition elsewhere, in export and where ``impl='reference'``.
"""
from .block_end import block_end, check_block_input
from .block_end_reference import (PLANE_GATES, PlaneGate, block_end_reference,
                                  channel_shuffle, gate_reference,
                                  plane_gate_reference, register_plane_gate)
from .dispatch import (IMPL_ENV, IMPL_NAMES, check_impl, log_fallback_once,
                       resolve_impl)
from .norm_fold import NormFold, norm_fold
from .sa_cpu_kernel import cpu_kernel_isa, sa_cpu, sa_cpu_unsupported
from .triton_support import triton_unavailable, triton_unsupported

__all__ = [
    'block_end', 'check_block_input', 'block_end_reference',
    'plane_gate_reference', 'gate_reference', 'channel_shuffle', 'PlaneGate',
    'PLANE_GATES', 'register_plane_gate', 'IMPL_NAMES', 'IMPL_ENV',
    'check_impl', 'resolve_impl', 'log_fallback_once', 'NormFold',
    'norm_fold', 'sa_cpu', 'sa_cpu_unsupported', 'cpu_kernel_isa',
    'triton_unavailable', 'triton_unsupported'
]
