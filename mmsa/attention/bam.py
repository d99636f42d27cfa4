"""Bottleneck Attention Module (BAM)."""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ..registry import register_attention
from .base import AttentionImpl, check_block_input
from .utils import check_choice, check_positive_int, check_reduction


@register_attention('BAM')
class BAM(AttentionImpl, BaseModule):
    """BAM: residual gate from a channel MLP and a dilated spatial branch.

    Park et al., "BAM: Bottleneck Attention Module", BMVC 2018
    (arXiv:1807.06514); official code Jongchan/attention-module.

    ``M(x) = sigmoid(Mc(x) + Ms(x))`` and ``out = x + x * M(x)`` (Eq. 1-2).
    The branches have the official structure:
    ``Mc(x) = W2 ReLU(BN(W1 GAP(x) + b1)) + b2`` of shape ``(N, C, 1, 1)``
    (``W1: C -> C/r``) and ``Ms(x)`` of shape ``(N, 1, H, W)``: a 1x1 conv
    ``C -> C/r`` and ``num_dilated_convs`` 3x3 convs with dilation d, each
    followed by BN and ReLU, then a 1x1 conv to one map. Every conv and
    linear layer has a bias. (Eq. 3-4 of the paper write one BN on each
    branch's output instead; the official code normalises the hidden
    layers only, and so do we.)

    ``fusion='add'`` is the paper's form above. The official code instead
    multiplies the branches inside the sigmoid,
    ``out = x * (1 + sigmoid(Mc(x) * Ms(x)))``; ``fusion='mul'`` gives that
    form, for the released checkpoints. The official channel branch pools
    with ``avg_pool2d(x, H, stride=H)``, a GAP only for square inputs; we
    always take the GAP over ``H x W``.

    Placement: a STAGE-level module, not a block plugin. The paper puts one
    BAM on the output of each of the first three ResNet stages (after
    ``layer1``, ``layer2`` and ``layer3``, before the next stage's
    downsampling), so it needs a stage hook rather than mmdet's
    ``ResNet(plugins=...)``.

    Parameters: with hidden width ``h = C // r`` and ``n`` dilated convs,
    ``3 * C * h + C + 7 * h + 1 + n * (9 * h**2 + 3 * h)`` (BN affine
    included). For ResNet-50 (C = 256, 512, 1024, r = 16, n = 2) that is
    358,067 (the paper's 25.92M total).

    The channel branch's ``BatchNorm1d`` sees one value per channel and
    sample, so training needs a batch of at least 2; a batch of 1 in train
    mode raises a ``ValueError``.

    Compatible with ``torch.compile(fullgraph=True)``.

    Args:
        in_channels (int): Channels C of the input.
        reduction (int): Reduction ratio r of both branches. Defaults to 16.
        dilation (int): Dilation d of the 3x3 convs of the spatial branch.
            Defaults to 4.
        num_dilated_convs (int): Number n of dilated 3x3 convs.
            Defaults to 2.
        fusion (str): How the branches combine inside the sigmoid:
            ``'add'`` (paper) or ``'mul'`` (official code). Defaults to
            ``'add'``.
        impl (str): ``'auto'`` or ``'reference'`` (the same composition).
            Defaults to ``'auto'``.
        init_cfg (dict, optional): mmengine initialisation config.
            Defaults to None.
    """

    _abbr_ = 'bam'

    def __init__(self,
                 in_channels: int,
                 reduction: int = 16,
                 dilation: int = 4,
                 num_dilated_convs: int = 2,
                 fusion: str = 'add',
                 impl: str = 'auto',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_reduction('BAM', in_channels, reduction)
        check_positive_int('BAM', 'dilation', dilation,
                           in_channels=in_channels, dilation=dilation)
        check_positive_int('BAM', 'num_dilated_convs', num_dilated_convs,
                           in_channels=in_channels,
                           num_dilated_convs=num_dilated_convs)
        check_choice('BAM', 'fusion', fusion, ('add', 'mul'),
                     in_channels=in_channels)
        self.in_channels = in_channels
        self.reduction = reduction
        self.dilation = dilation
        self.num_dilated_convs = num_dilated_convs
        self.fusion = fusion
        self._set_impl(impl)
        hidden = in_channels // reduction
        self.hidden_channels = hidden
        self.channel_gate = nn.Sequential(
            nn.Linear(in_channels, hidden), nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True), nn.Linear(hidden, in_channels))
        spatial = [
            nn.Conv2d(in_channels, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True)
        ]
        for _ in range(num_dilated_convs):
            spatial += [
                nn.Conv2d(
                    hidden, hidden, 3, padding=dilation, dilation=dilation),
                nn.BatchNorm2d(hidden),
                nn.ReLU(inplace=True)
            ]
        spatial.append(nn.Conv2d(hidden, 1, 1))
        self.spatial_gate = nn.Sequential(*spatial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_block_input(self, x)
        n, c = x.shape[:2]
        if self.training and n < 2:
            raise ValueError(
                f'BAM(in_channels={self.in_channels}): training needs a '
                f'batch of at least 2 (the channel branch has BatchNorm1d), '
                f'got batch size {n}; use eval() for single images')
        channel = self.channel_gate(x.mean((2, 3))).reshape(n, c, 1, 1)
        spatial = self.spatial_gate(x)
        if self.fusion == 'add':
            gate = channel + spatial
        else:
            gate = channel * spatial
        return x * (1 + gate.sigmoid())

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, '
                f'reduction={self.reduction}, dilation={self.dilation}, '
                f'num_dilated_convs={self.num_dilated_convs}, '
                f"fusion='{self.fusion}'")
