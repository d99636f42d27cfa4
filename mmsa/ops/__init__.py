"""Fused kernels with their reference implementations beside them."""
from .shuffle_attention import (channel_shuffle, log_fallback_once, sa_fused,
                                sa_fused_unsupported, sa_gates, sa_reference)

__all__ = [
    'channel_shuffle', 'sa_gates', 'sa_reference', 'sa_fused',
    'sa_fused_unsupported', 'log_fallback_once'
]
