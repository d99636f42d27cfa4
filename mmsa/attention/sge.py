"""Spatial Group-wise Enhance (SGE)."""
from typing import Optional

import torch
import torch.nn as nn

from ..registry import register_attention
from .base import GateAttention
from .utils import check_groups


@register_attention('SGE')
class SpatialGroupEnhance(GateAttention):
    """Spatial Group-wise Enhance: a per-group spatial gate from similarity.

    Li, Hu & Yang, "Spatial Group-wise Enhance: Improving Semantic Feature
    Learning in Convolutional Networks", 2019 (arXiv:1905.09646); official
    code implus/PytorchInsight (``resnet_sge.py``).

    The channels are split into ``groups`` groups of ``C / groups``. In each
    group, with ``g = GAP(x)`` the group's mean feature, the similarity map
    ``t = sum_c(x * g)`` is normalised over the ``H * W`` positions of each
    sample, ``t = (t - mean(t)) / (std(t) + 1e-5)``, scaled and shifted by
    the group's own ``weight`` and ``bias`` and gates every channel of the
    group: ``out = x * sigmoid(weight * t + bias)``. As in the official code
    the std is the unbiased one, so the input needs ``H * W > 1``; a 1x1
    input raises a ``ValueError`` (the official code returns NaN). The
    ``(1, groups, 1, 1)`` parameters are initialised as in the official code
    (weight 0, bias 1), which makes the module start as ``x * sigmoid(1)``.

    Placement: after ``bn3`` of each bottleneck, before the residual add
    (mmdet plugin position ``after_conv3``).

    Parameters: ``2 * groups``, independent of C (2,048 for the 16 blocks of
    ResNet-50 with ``groups=64``). Names follow the official code
    (``weight``, ``bias``) so official checkpoints load by renaming the
    block prefix only.

    The gate is computed in PyTorch; :func:`mmsa.ops.block_end` applies it
    (with the block's residual add and ReLU) in one Triton pass on CUDA.
    Compatible with ``torch.compile(fullgraph=True)``.

    Args:
        in_channels (int): Channels C of the input; divisible by ``groups``.
        groups (int): Number of groups G. Defaults to 64 (official).
        impl (str): ``'auto'``, ``'triton'`` or ``'reference'``.
            Defaults to ``'auto'``.
        init_cfg (dict, optional): mmengine initialisation config.
            Defaults to None.
    """

    _abbr_ = 'sge'

    def __init__(self,
                 in_channels: int,
                 groups: int = 64,
                 impl: str = 'auto',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_groups('SGE', in_channels, groups)
        self.in_channels = in_channels
        self.groups = groups
        self._set_impl(impl)
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))

    def gates(self, x: torch.Tensor) -> tuple:
        n, c, h, w = x.shape
        if h * w < 2:
            raise ValueError(
                f'SGE(in_channels={self.in_channels}, groups={self.groups}): '
                f'input of shape {tuple(x.shape)} has H*W={h * w}; the '
                f'unbiased std over positions needs H*W > 1')
        # t = sum_c x * GAP(x) per group as one batched mat-vec: no
        # N x C x H x W product in memory (the official code makes one)
        xg = x.reshape(n, self.groups, c // self.groups, h * w)
        t = torch.matmul(xg.mean(3).unsqueeze(2), xg).squeeze(2)
        t = t - t.mean(2, keepdim=True)
        t = t / (t.std(2, keepdim=True) + 1e-5)
        t = t.reshape(n, self.groups, h, w) * self.weight + self.bias
        return None, t.sigmoid()

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, groups={self.groups}, '
                f'impl={self.impl!r}')
