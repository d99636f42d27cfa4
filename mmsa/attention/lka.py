"""Large Kernel Attention (LKA, from VAN)."""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ..registry import register_attention
from .base import AttentionImpl, check_block_input
from .utils import check_positive_int


@register_attention('LKA')
class LargeKernelAttention(AttentionImpl, BaseModule):
    """LKA: a decomposed 21x21 convolution used as a multiplicative gate.

    Guo et al., "Visual Attention Network", CVMJ 2023 (arXiv:2202.09741);
    official code Visual-Attention-Network/VAN-Classification.

    ``out = x * conv1(conv_spatial(conv0(x)))`` (Eq. 1-2): ``conv0`` a
    depthwise 5x5 conv (padding 2), ``conv_spatial`` a depthwise 7x7 conv
    with dilation 3 (padding 9), the paper's decomposition of a 21x21
    kernel (their receptive field spans 23x23 pixels), and
    ``conv1`` a 1x1 conv ``C -> C``; all with bias, as officially. The
    attention is not squashed by a sigmoid: the gate is unbounded and may
    be negative, so inserting LKA into a pretrained network changes the
    scale of its features until it is trained.

    Placement: in VAN, inside the spatial attention unit
    ``1x1 conv -> GELU -> LKA -> 1x1 conv`` with a shortcut; as an mmsa
    module it takes any feature map, e.g. a bottleneck's ``after_conv3``
    position.

    Parameters: ``C**2 + 77 * C`` (``conv0`` 26C, ``conv_spatial`` 50C,
    ``conv1`` ``C**2 + C``); 9,024 for ``C=64``. The attribute names
    ``conv0``, ``conv_spatial`` and ``conv1`` are the official ones, so VAN
    checkpoints load by renaming the block prefix only.

    Compatible with ``torch.compile(fullgraph=True)``.

    Args:
        in_channels (int): Channels C of the input.
        impl (str): ``'auto'`` or ``'reference'`` (the same composition).
            Defaults to ``'auto'``.
        init_cfg (dict, optional): mmengine initialisation config.
            Defaults to None.
    """

    _abbr_ = 'lka'

    def __init__(self,
                 in_channels: int,
                 impl: str = 'auto',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_positive_int('LKA', 'in_channels', in_channels,
                           in_channels=in_channels)
        self.in_channels = in_channels
        self._set_impl(impl)
        self.conv0 = nn.Conv2d(
            in_channels, in_channels, 5, padding=2, groups=in_channels)
        self.conv_spatial = nn.Conv2d(
            in_channels,
            in_channels,
            7,
            padding=9,
            dilation=3,
            groups=in_channels)
        self.conv1 = nn.Conv2d(in_channels, in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_block_input(self, x)
        return x * self.conv1(self.conv_spatial(self.conv0(x)))
