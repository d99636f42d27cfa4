"""mmsa: lightweight attention modules for MMDetection and MMSegmentation.

``import mmsa`` registers everything in mmengine's root ``MODELS``, so
``custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)`` in any
mm config makes mmsa's types nameable.
"""
from .utils.compat import check_floors

check_floors()  # one clear line for a torch or numpy older than tested

from . import attention, engine, models  # noqa: F401,E402  (registration)
from .errors import install_excepthook  # noqa: E402
from .attention import build_attention  # noqa: E402
from .registry import add_type_hints  # noqa: E402
from .utils.checkpoint import register_checkpoint_loaders  # noqa: E402
from .version import __version__  # noqa: E402

# Every checkpoint mmengine reads for a config (load_from, resume,
# Pretrained init, open-mmlab://) loads weights-only, mmengine's own types
# included, on every supported torch.
register_checkpoint_loaders()
# After ``models`` imported mmdet/mmseg: their registries get the hints too.
add_type_hints()
# mmsa's own errors (a refused checkpoint ...) end any script in one line.
install_excepthook()

__all__ = ['__version__', 'build_attention']
