"""Attention modules: one file each, all registered in mmengine's MODELS.

Each takes ``in_channels`` and returns a tensor of its input's shape, so it
can be named in ``attention=dict(type=...)`` of mmsa's backbones and necks
and in stock mmdet/mmseg ``ResNet(plugins=...)``.
"""
from ..registry import ATTENTIONS, register_unavailable
from .bam import BAM
from .builder import (UnknownAttentionError, build_attention,
                      get_attention_class)
from .cbam import CBAM
from .eca import EfficientChannelAttention
from .lka import LargeKernelAttention
from .sge import SpatialGroupEnhance
from .shuffle_attention import ShuffleAttention, channel_shuffle
from .squeeze_excitation import SqueezeExcitation
from .ulsam import ULSAM

__all__ = [
    'ATTENTIONS', 'build_attention', 'get_attention_class',
    'UnknownAttentionError', 'ShuffleAttention', 'channel_shuffle',
    'SqueezeExcitation', 'EfficientChannelAttention', 'CBAM',
    'SpatialGroupEnhance', 'BAM', 'ULSAM', 'LargeKernelAttention'
]

try:  # GC / Non-local reuse mmcv's bricks
    from .gc import GlobalContext
    from .nonlocal_block import NonLocal
    __all__ += ['GlobalContext', 'NonLocal']
except ImportError as err:  # pragma: no cover - depends on the environment
    for _name in ('GC', 'NonLocal'):
        register_unavailable(_name, 'mmcv', 'det', reason=str(err),
                             attention=True)
