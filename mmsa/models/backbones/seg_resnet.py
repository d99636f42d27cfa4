"""Attention ResNets for MMSegmentation (7x7 stem, V1c and V1d)."""
from mmseg.models.backbones.resnet import BasicBlock, Bottleneck, ResNet

from ...registry import MODELS
from .attention_resnet import (AttentionBasicBlockMixin,
                               AttentionBottleneckMixin, AttentionResNetMixin)


class SegAttnBasicBlock(AttentionBasicBlockMixin, BasicBlock):
    """mmseg ``BasicBlock`` that accepts mmsa attention."""


class SegAttnBottleneck(AttentionBottleneckMixin, Bottleneck):
    """mmseg ``Bottleneck`` without 1.2.2's ``forward_plugin`` bug: each
    plugin/attention at a position gets the previous one's output."""


@MODELS.register_module()
class AttnResNetSeg(AttentionResNetMixin, ResNet):
    """mmseg ``ResNet`` whose attention is one config key.

    Every argument of :class:`mmseg.models.backbones.ResNet` keeps its
    meaning, including ``dilations``/``strides`` for output stride 8 or 16
    (atrous convolution as in DeepLab), ``contract_dilation``,
    ``multi_grid``, ``deep_stem``, ``avg_down``, ``frozen_stages``,
    ``norm_eval``, ``with_cp`` and ``init_cfg``. Use :class:`AttnResNetV1c`
    for mmseg's default deep-stem backbone (UperNet, PSPNet, DeepLabV3).

    Args:
        attention, attention_stages, attention_position, attention_blocks,
        stage_attention, stage_attention_stages: see
            :class:`~mmsa.models.backbones.attention_resnet.AttentionResNetMixin`.
        **kwargs: Arguments of mmseg's ``ResNet``.
    """

    arch_settings = {
        18: (SegAttnBasicBlock, (2, 2, 2, 2)),
        34: (SegAttnBasicBlock, (3, 4, 6, 3)),
        50: (SegAttnBottleneck, (3, 4, 6, 3)),
        101: (SegAttnBottleneck, (3, 4, 23, 3)),
        152: (SegAttnBottleneck, (3, 8, 36, 3))
    }


@MODELS.register_module()
class AttnResNetV1c(AttnResNetSeg):
    """:class:`AttnResNetSeg` with the deep 3x3 stem (mmseg ``ResNetV1c``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(deep_stem=True, avg_down=False, **kwargs)


@MODELS.register_module()
class AttnResNetV1d(AttnResNetSeg):
    """:class:`AttnResNetSeg` with deep stem and average-pool downsampling
    (mmseg ``ResNetV1d``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(deep_stem=True, avg_down=True, **kwargs)
