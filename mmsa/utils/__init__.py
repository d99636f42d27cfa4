"""Helpers shared by mmsa's models and tools."""
from .checkpoint import (UnreadableCheckpointError, UnsafeCheckpointError,
                         allow_mmengine_checkpoint_types,
                         attention_modules_without_weights,
                         register_checkpoint_loaders, safe_load)

__all__ = [
    'UnreadableCheckpointError', 'UnsafeCheckpointError',
    'allow_mmengine_checkpoint_types', 'attention_modules_without_weights',
    'register_checkpoint_loaders', 'safe_load'
]
