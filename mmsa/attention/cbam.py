"""Convolutional Block Attention Module (CBAM)."""
from typing import Optional

import torch
import torch.nn as nn

from ..registry import register_attention
from .base import GateAttention
from .utils import check_odd_kernel, check_reduction


@register_attention('CBAM')
class CBAM(GateAttention):
    """CBAM: a channel gate from pooled MLPs, then a spatial gate from a conv.

    Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018
    (arXiv:1807.06521); official code Jongchan/attention-module.

    ``x' = x * Mc(x)`` and ``out = x' * Ms(x')`` (Eq. 1), with the channel
    gate ``Mc(x) = sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x)))`` (Eq. 2), one
    MLP ``W2 ReLU(W1 v + b1) + b2`` (``W1: C -> C/r``, both with biases)
    shared by the two pooled vectors, and the spatial gate
    ``Ms(x') = sigmoid(BN(conv_kxk([max_c(x'); mean_c(x')])))`` (Eq. 3),
    a bias-free conv from 2 maps to 1 with same padding. As in the official
    code, the channel-wise max comes first in the concatenation (the paper
    writes the mean first) and the conv is followed by a one-channel
    ``BatchNorm2d(eps=1e-5, momentum=0.01)`` that the paper does not
    mention.

    Placement: after ``bn3`` of each bottleneck, before the residual add
    (mmdet plugin position ``after_conv3``).

    Parameters: ``2 * C * h + h + C + 2 * k**2 + 2`` with hidden width
    ``h = C // r`` (the last two terms are the conv and the BN affine);
    8,564 for ``C=256``, and 2,532,592 for the 16 blocks of ResNet-50 with
    ``r=16``, ``k=7`` (the paper's 28.09M total).

    The gates are computed in PyTorch; :func:`mmsa.ops.block_end` applies
    them (with the block's residual add and ReLU) in one Triton pass on
    CUDA. Compatible with ``torch.compile(fullgraph=True)``.

    Args:
        in_channels (int): Channels C of the input.
        reduction (int): Reduction ratio r of the channel MLP.
            Defaults to 16.
        kernel_size (int): Odd size k of the spatial gate's conv.
            Defaults to 7.
        impl (str): ``'auto'``, ``'triton'`` or ``'reference'``.
            Defaults to ``'auto'``.
        init_cfg (dict, optional): mmengine initialisation config.
            Defaults to None.
    """

    _abbr_ = 'cbam'

    def __init__(self,
                 in_channels: int,
                 reduction: int = 16,
                 kernel_size: int = 7,
                 impl: str = 'auto',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_reduction('CBAM', in_channels, reduction,
                        kernel_size=kernel_size)
        check_odd_kernel('CBAM', kernel_size, in_channels=in_channels,
                         reduction=reduction)
        self.in_channels = in_channels
        self.reduction = reduction
        self.kernel_size = kernel_size
        self._set_impl(impl)
        hidden = in_channels // reduction
        self.hidden_channels = hidden
        self.channel_fc1 = nn.Linear(in_channels, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.channel_fc2 = nn.Linear(hidden, in_channels)
        self.spatial_conv = nn.Conv2d(
            2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def gates(self, x: torch.Tensor) -> tuple:
        # Both pooled vectors go through the shared MLP in one call.
        pooled = torch.stack([x.mean((2, 3)), x.amax((2, 3))], dim=1)
        channel = self.channel_fc2(self.relu(
            self.channel_fc1(pooled))).sum(1).sigmoid()
        # the spatial gate's maps are of the channel-gated input; the
        # output is x * channel * spatial in one pass (block_end)
        gated = x * channel[:, :, None, None]
        maps = torch.cat([gated.amax(1, keepdim=True),
                          gated.mean(1, keepdim=True)], dim=1)
        return channel, self.spatial_bn(self.spatial_conv(maps)).sigmoid()

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, '
                f'reduction={self.reduction}, '
                f'kernel_size={self.kernel_size}, impl={self.impl!r}')
