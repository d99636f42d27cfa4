"""Fused kernels with their reference implementations beside them.

One dispatcher per op picks the kernel for the input's device: Triton on
CUDA, the C++ kernel on CPU (SA), the reference composition elsewhere and
under ``torch.compile`` or export.
"""
from .dispatch import log_fallback_once
from .gate import GATE_IMPLS, apply_gates, gate_reference
from .shuffle_attention import (SA_IMPLS, apply_shuffle_attention,
                                channel_shuffle, empty_output_cache,
                                output_cache_bytes, sa_fused,
                                sa_fused_if_supported, sa_fused_unsupported,
                                sa_gates, sa_reference,
                                set_output_cache_limit)
from .triton_support import triton_unavailable, triton_unsupported

__all__ = [
    'channel_shuffle', 'sa_gates', 'sa_reference', 'sa_fused',
    'sa_fused_if_supported', 'sa_fused_unsupported',
    'apply_shuffle_attention', 'SA_IMPLS', 'apply_gates', 'gate_reference',
    'GATE_IMPLS',
    'log_fallback_once', 'triton_unavailable', 'triton_unsupported',
    'empty_output_cache', 'output_cache_bytes', 'set_output_cache_limit'
]
