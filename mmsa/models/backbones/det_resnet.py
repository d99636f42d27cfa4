"""Attention ResNet for MMDetection."""
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet

from ...registry import MODELS
from .attention_resnet import (AttentionBasicBlockMixin,
                               AttentionBottleneckMixin, AttentionResNetMixin)


class AttnBasicBlock(AttentionBasicBlockMixin, BasicBlock):
    """mmdet ``BasicBlock`` that accepts mmsa attention."""


class AttnBottleneck(AttentionBottleneckMixin, Bottleneck):
    """mmdet ``Bottleneck`` that runs plugins, then mmsa attention."""


@MODELS.register_module()
class AttnResNet(AttentionResNetMixin, ResNet):
    """mmdet ``ResNet`` whose attention is one config key.

    Every argument of :class:`mmdet.models.backbones.ResNet` keeps its
    meaning (depth 18-152, ``frozen_stages`` - attention inside frozen
    stages is frozen too - ``norm_eval``, ``dcn``, ``plugins``,
    ``out_indices``, ``init_cfg``, ``with_cp``; ``deep_stem`` +
    ``avg_down`` give ResNetV1d). Unlike stock mmdet, BasicBlock
    (ResNet-18/34) takes attention too.

    Example:
        >>> backbone = AttnResNet(depth=50,
        ...                       attention=dict(type='SA', groups=64))

    Args:
        attention, attention_stages, attention_position, attention_blocks,
        stage_attention, stage_attention_stages: see
            :class:`~mmsa.models.backbones.attention_resnet.AttentionResNetMixin`.
        **kwargs: Arguments of mmdet's ``ResNet``.
    """

    arch_settings = {
        18: (AttnBasicBlock, (2, 2, 2, 2)),
        34: (AttnBasicBlock, (3, 4, 6, 3)),
        50: (AttnBottleneck, (3, 4, 6, 3)),
        101: (AttnBottleneck, (3, 4, 23, 3)),
        152: (AttnBottleneck, (3, 8, 36, 3))
    }
