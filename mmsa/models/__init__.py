"""Backbones and necks; registers the parts whose framework is importable.

With only one of mmdet/mmseg installed, the other framework's types are
registered as placeholders whose construction raises an ImportError saying
what to install, so a config asking for them fails with that message.
"""
import importlib
from typing import Dict, Tuple

from ..registry import framework_available, register_unavailable
from .necks import AttnNeck

try:  # VAN needs no framework, only mmcv's norm layers and DropPath
    from .backbones.van import VAN
except ImportError as _err:  # pragma: no cover - depends on the environment
    VAN = register_unavailable('VAN', 'mmcv', 'det', reason=str(_err))

# framework package -> (mmsa module, registered types, pip extra)
FRAMEWORK_PARTS: Dict[str, Tuple[str, Tuple[str, ...], str]] = {
    'mmdet': ('mmsa.models.backbones.det_resnet', ('AttnResNet', ), 'det'),
    'mmseg': ('mmsa.models.backbones.seg_resnet',
              ('AttnResNetSeg', 'AttnResNetV1c', 'AttnResNetV1d'), 'seg'),
}
AVAILABLE: Dict[str, bool] = {}

for _package, (_module, _types, _extra) in FRAMEWORK_PARTS.items():
    _reason = 'not installed'
    if framework_available(_package):
        try:
            importlib.import_module(_module)
            AVAILABLE[_package] = True
            continue
        except (ImportError, AssertionError) as _err:
            # mmdet/mmseg assert on an incompatible mmcv at import time.
            _reason = f'{type(_err).__name__}: {_err}'
    AVAILABLE[_package] = False
    for _name in _types:
        register_unavailable(
            _name, 'mmsegmentation' if _package == 'mmseg' else _package,
            _extra, reason=_reason)

__all__ = ['AttnNeck', 'AVAILABLE', 'FRAMEWORK_PARTS', 'VAN']
