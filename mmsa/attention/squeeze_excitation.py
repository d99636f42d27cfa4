"""Squeeze-and-Excitation."""
from typing import Optional

import torch
import torch.nn as nn

from ..registry import register_attention
from .base import GateAttention
from .utils import check_positive_int, check_reduction, make_divisible


@register_attention('SE')
class SqueezeExcitation(GateAttention):
    """Squeeze-and-Excitation: channel gate from a bottleneck MLP on GAP(x).

    Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, Eq. 2-4:
    ``x * sigmoid(W2 ReLU(W1 GAP(x) + b1) + b2)`` with ``W1: C -> C/r`` and
    ``W2: C/r -> C``, both with biases as in the paper.

    Placement: after ``bn3`` of each bottleneck, before the residual add.

    Parameters: ``2 * C * h + h + C`` with hidden width ``h = C // r``
    (2,530,992 for ResNet-50 with ``r=16``: SE-ResNet-50 = 28,088,024).

    Compatible with ``torch.compile(fullgraph=True)``.

    Args:
        in_channels (int): Channels C of the input.
        reduction (int): Reduction ratio r. Defaults to 16.
        divisor (int, optional): Round the hidden width to a multiple of this
            (timm/mmpretrain style, e.g. 8). Defaults to None: ``C // r``
            exactly, as in the paper.
        init_cfg (dict, optional): mmengine initialisation config.
            Defaults to None.
    """

    _abbr_ = 'se'

    def __init__(self,
                 in_channels: int,
                 reduction: int = 16,
                 divisor: Optional[int] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_reduction('SE', in_channels, reduction)
        if divisor is None:
            hidden = in_channels // reduction
        else:
            check_positive_int('SE', 'divisor', divisor,
                               in_channels=in_channels, divisor=divisor)
            hidden = make_divisible(in_channels / reduction, divisor)
        self.in_channels = in_channels
        self.hidden_channels = hidden
        self.fc1 = nn.Conv2d(in_channels, hidden, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, in_channels, 1)

    def gates(self, x: torch.Tensor) -> tuple:
        w = self.fc2(self.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return w.sigmoid(), None
