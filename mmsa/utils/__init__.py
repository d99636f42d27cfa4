"""Helpers shared by mmsa's models and tools."""
from .checkpoint import (UnsafeCheckpointError,
                         allow_mmengine_checkpoint_types,
                         attention_modules_without_weights, checkpoint_keys,
                         safe_load)

__all__ = [
    'UnsafeCheckpointError', 'allow_mmengine_checkpoint_types',
    'attention_modules_without_weights', 'checkpoint_keys', 'safe_load'
]
