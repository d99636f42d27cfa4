"""Shuffle Attention (SA-Net)."""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ..registry import register_attention
from .utils import check_groups


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: channel ``g*C/groups + i`` -> ``i*groups + g``."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(
        n, c, h, w)


@register_attention('SA')
class ShuffleAttention(BaseModule):
    """Shuffle Attention: channel and spatial gates on grouped sub-features.

    Zhang & Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural
    Networks", ICASSP 2021 (arXiv:2102.00240); official code wofmanaf/SA-Net.

    The channels are split into ``groups`` groups and each group into two
    halves of ``k = C / (2 * groups)`` channels. The first half is gated by
    ``sigmoid(cweight * GAP(x) + cbias)`` (Eq. 2), the second by
    ``sigmoid(sweight * GN(x) + sbias)`` with ``GN = GroupNorm(k, k)``
    (Eq. 3); the halves are concatenated and the channels shuffled with two
    groups. The four ``(1, k, 1, 1)`` gate parameters are shared by all
    groups, and initialised as in the official code (weights 0, biases 1).

    Placement: in every ResNet bottleneck after ``bn3``, before the residual
    add (mmdet plugin position ``after_conv3``).

    Parameters: ``6k = 3 * C / groups`` (708 for the 16 blocks of ResNet-50
    with ``groups=64``). Names follow the official code (``cweight``,
    ``cbias``, ``sweight``, ``sbias``, ``gn.weight``, ``gn.bias``) so official
    checkpoints load by renaming the block prefix only.

    Compatible with ``torch.compile(fullgraph=True)``.

    Args:
        in_channels (int): Channels C of the input; divisible by
            ``2 * groups``.
        groups (int): Number of groups G. Defaults to 64 (official). The SA
            author suggests 32 or 16 where C is small.
        init_cfg (dict, optional): mmengine initialisation config.
            Defaults to None.
    """

    _abbr_ = 'sa'

    def __init__(self,
                 in_channels: int,
                 groups: int = 64,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_groups('SA', in_channels, groups, factor=2)
        self.in_channels = in_channels
        self.groups = groups
        k = in_channels // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.gn = nn.GroupNorm(k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        xg = x.reshape(n * self.groups, c // self.groups, h, w)
        x_channel, x_spatial = xg.chunk(2, dim=1)
        gate_c = self.cweight * x_channel.mean((2, 3), keepdim=True) \
            + self.cbias
        gate_s = self.sweight * self.gn(x_spatial) + self.sbias
        out = torch.cat([x_channel * gate_c.sigmoid(),
                         x_spatial * gate_s.sigmoid()], dim=1)
        return channel_shuffle(out.reshape(n, c, h, w), 2)

    def extra_repr(self) -> str:
        return f'in_channels={self.in_channels}, groups={self.groups}'
