"""Ultra-Lightweight Subspace Attention Module (ULSAM)."""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ..registry import register_attention
from .base import AttentionImpl, check_block_input
from .utils import check_groups


@register_attention('ULSAM')
class ULSAM(AttentionImpl, BaseModule):
    """ULSAM: one spatial softmax map per channel subspace.

    Saini et al., "ULSAM: Ultra-Lightweight Subspace Attention Module for
    Compact Convolutional Neural Networks", WACV 2020 (arXiv:2006.15102);
    official code Nandan91/ULSAM.

    The channels are split into ``g`` subspaces of ``k = C / g`` channels.
    For subspace ``F_i``::

        A_i = softmax_HW(ReLU(BN(PW(maxpool(ReLU(BN(DW(F_i))))))))
        out_i = F_i + F_i * A_i

    with ``DW`` a depthwise 1x1 conv, ``maxpool`` 3x3 stride 1 padding 1,
    ``PW`` a pointwise conv ``k -> 1`` (both convs with bias, as in the
    official code) and the softmax over the ``H * W`` positions; the
    ``out_i`` are concatenated. All subspaces run at once: the depthwise
    conv has ``groups=C``, the pointwise conv ``C -> g`` has ``groups=g``
    and each of the ``g`` maps multiplies its own ``k`` channels.

    A widely copied version of the official code (before its commit
    ed5b7a3, Oct 2020) max-pools ``x`` instead of the depthwise output,
    which leaves the depthwise conv and its BN dead (no effect on the
    output, no gradient). We follow the paper's order, as the fixed
    official code does.
    The official BN layers pass ``momentum=0.9`` (the Keras convention,
    PyTorch 0.1); we keep PyTorch's default 0.1, which only affects the
    running statistics.

    Placement: any feature map; the paper inserts it between layers of
    compact CNNs (MobileNet-V1/V2). In a ResNet bottleneck, e.g. after
    ``bn3``, before the residual add (mmdet plugin position
    ``after_conv3``).

    Parameters: ``5 * C + 3 * g`` (depthwise conv ``2C``, its BN ``2C``,
    pointwise conv ``C + g``, its BN ``2g``); 332 for ``C=64, g=4``.

    Compatible with ``torch.compile(fullgraph=True)``.

    Args:
        in_channels (int): Channels C of the input; divisible by ``groups``.
        groups (int): Number of subspaces g. Defaults to 4 (the paper
            compares several values without fixing one; 4 is the official
            code's example).
        impl (str): ``'auto'`` or ``'reference'`` (the same composition).
            Defaults to ``'auto'``.
        init_cfg (dict, optional): mmengine initialisation config.
            Defaults to None.
    """

    _abbr_ = 'ulsam'

    def __init__(self,
                 in_channels: int,
                 groups: int = 4,
                 impl: str = 'auto',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_groups('ULSAM', in_channels, groups)
        self.in_channels = in_channels
        self.groups = groups
        self._set_impl(impl)
        self.dw_conv = nn.Conv2d(in_channels, in_channels, 1,
                                 groups=in_channels)
        self.dw_bn = nn.BatchNorm2d(in_channels)
        self.maxpool = nn.MaxPool2d(3, stride=1, padding=1)
        self.pw_conv = nn.Conv2d(in_channels, groups, 1, groups=groups)
        self.pw_bn = nn.BatchNorm2d(groups)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_block_input(self, x)
        n, c, h, w = x.shape
        y = self.maxpool(self.relu(self.dw_bn(self.dw_conv(x))))
        y = self.relu(self.pw_bn(self.pw_conv(y)))
        attn = y.reshape(n, self.groups, 1, h * w).softmax(dim=-1)
        xs = x.reshape(n, self.groups, c // self.groups, h * w)
        return (xs + xs * attn).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f'in_channels={self.in_channels}, groups={self.groups}'
