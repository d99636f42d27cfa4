"""mmsa: lightweight attention modules for MMDetection and MMSegmentation.

``import mmsa`` registers everything in mmengine's root ``MODELS``, so
``custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)`` in any
mm config makes mmsa's types nameable.
"""
from . import attention, engine, models  # noqa: F401  (registration)
from .attention import build_attention
from .registry import add_type_hints
from .utils.checkpoint import allow_mmengine_checkpoint_types
from .version import __version__

# mmengine's own checkpoints (resume) load under weights_only=True.
allow_mmengine_checkpoint_types()
# After ``models`` imported mmdet/mmseg: their registries get the hints too.
add_type_hints()

__all__ = ['__version__', 'build_attention']
