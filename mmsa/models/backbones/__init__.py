"""Backbones; the framework-specific modules are imported by
:mod:`mmsa.models` only when their framework is importable."""
from .attention_resnet import (AttentionBasicBlockMixin,
                               AttentionBottleneckMixin, AttentionResNetMixin)

__all__ = [
    'AttentionBasicBlockMixin', 'AttentionBottleneckMixin',
    'AttentionResNetMixin'
]
