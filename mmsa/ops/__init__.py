"""Fused kernels with their reference implementations beside them."""
from .shuffle_attention import (channel_shuffle, empty_output_cache,
                                log_fallback_once, output_cache_bytes,
                                sa_fused, sa_fused_if_supported,
                                sa_fused_unsupported, sa_gates,
                                sa_reference, set_output_cache_limit)

__all__ = [
    'channel_shuffle', 'sa_gates', 'sa_reference', 'sa_fused',
    'sa_fused_if_supported', 'sa_fused_unsupported', 'log_fallback_once',
    'empty_output_cache', 'output_cache_bytes', 'set_output_cache_limit'
]
