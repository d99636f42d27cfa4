"""Shuffle Attention (SA-Net)."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.block_end_reference import (PlaneGate, channel_shuffle,
                                       register_plane_gate)
from ..registry import register_attention
from .base import PlaneGateAttention
from .utils import check_groups

__all__ = ['ShuffleAttention', 'channel_shuffle', 'sa_gates']


@register_plane_gate('SA')
def sa_plane_gate(mean: torch.Tensor, var: torch.Tensor,
                  params: Sequence[torch.Tensor], eps: float
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """SA's logit ``p * (x - mean) + q`` of every plane: channel half
    ``p = 0, q = cw * mean + cb`` (Eq. 2); spatial half (GroupNorm with one
    channel a group, Eq. 3) ``p = sw * gw / sqrt(var + eps),
    q = sw * gb + sb``."""
    cweight, cbias, sweight, sbias, gn_weight, gn_bias = params
    n, c = mean.shape
    k = cweight.numel()
    cw, cb = cweight.reshape(k), cbias.reshape(k)
    sw, sb = sweight.reshape(k), sbias.reshape(k)
    mean = mean.reshape(n, c // (2 * k), 2, k)
    q_channel = cw * mean[:, :, 0] + cb
    p_spatial = sw * gn_weight * torch.rsqrt(
        var.reshape(n, c // (2 * k), 2, k)[:, :, 1] + eps)
    q_spatial = (sw * gn_bias + sb).expand_as(p_spatial)
    p = torch.stack([torch.zeros_like(p_spatial), p_spatial], 2)
    return p.reshape(n, c), torch.stack([q_channel, q_spatial],
                                        2).reshape(n, c)


def sa_gates(x: torch.Tensor, sa: 'ShuffleAttention'
             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """SA's two gates (the paper's Eq. 2-3), before the channel shuffle:
    the channel-branch weights ``sigmoid(cw * GAP(x) + cb)`` of shape
    ``(N, G, k)`` and the spatial-branch gate ``sigmoid(sw * GN(x) + sb)``
    of shape ``(N, G, k, H, W)``, ``k = C / (2 * groups)``; each multiplies
    its half of each group."""
    n, c, h, w = x.shape
    xg = x.reshape(n * sa.groups, c // sa.groups, h, w)
    x_channel, x_spatial = xg.chunk(2, dim=1)
    k = x_channel.shape[1]
    gate_c = (sa.cweight * x_channel.mean((2, 3), keepdim=True) +
              sa.cbias).sigmoid()
    x_norm = F.group_norm(x_spatial, k, sa.gn.weight, sa.gn.bias, sa.gn.eps)
    gate_s = (sa.sweight * x_norm + sa.sbias).sigmoid()
    return gate_c.reshape(n, sa.groups, k), gate_s.reshape(
        n, sa.groups, k, h, w)


@register_attention('SA')
class ShuffleAttention(PlaneGateAttention):
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

    Both halves are ``x * sigmoid(p * (x - mean) + q)`` with ``p`` and ``q``
    per (sample, channel) from the plane's mean and variance, and the
    shuffle is an index map: one statistics pass and one element-wise pass
    (:func:`mmsa.ops.block_end`). ``impl='auto'`` runs the Triton kernels on
    CUDA (where the ResNet blocks also fold ``bn3``, the residual add and
    the ReLU into them) and the C++ kernel on CPU; ``'triton'``, ``'cpu'``
    and ``'reference'`` force one (a kernel that cannot take an input runs
    the reference and logs why once). Compatible with
    ``torch.compile(fullgraph=True)``.

    Args:
        in_channels (int): Channels C of the input; divisible by
            ``2 * groups``.
        groups (int): Number of groups G. Defaults to 64 (official). The SA
            author suggests 32 or 16 where C is small.
        impl (str): ``'auto'``, ``'triton'``, ``'cpu'`` or ``'reference'``.
            Defaults to ``'auto'``.
        init_cfg (dict, optional): mmengine initialisation config.
            Defaults to None.
    """

    _abbr_ = 'sa'
    IMPLS = ('auto', 'triton', 'cpu', 'reference')

    def __init__(self,
                 in_channels: int,
                 groups: int = 64,
                 impl: str = 'auto',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_groups('SA', in_channels, groups, factor=2)
        self.in_channels = in_channels
        self.groups = groups
        self._set_impl(impl)
        k = in_channels // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.gn = nn.GroupNorm(k, k)

    def plane_gate(self) -> PlaneGate:
        gn = self.gn
        return PlaneGate('SA', (self.cweight, self.cbias, self.sweight,
                                self.sbias, gn.weight, gn.bias), gn.eps,
                         shuffle=2)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's composition (Eq. 2-3 in the official code's order):
        the gates, the halves gated and concatenated, the shuffle."""
        n, c, h, w = x.shape
        gate_c, gate_s = sa_gates(x, self)
        xg = x.reshape(n, self.groups, 2, c // (2 * self.groups), h, w)
        out = torch.stack([xg[:, :, 0] * gate_c[..., None, None],
                           xg[:, :, 1] * gate_s], dim=2)
        return channel_shuffle(out.reshape(n, c, h, w), 2)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, groups={self.groups}, '
                f'impl={self.impl!r}')
