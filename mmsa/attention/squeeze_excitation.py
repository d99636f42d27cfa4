"""Squeeze-and-Excitation."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.block_end_reference import PlaneGate, register_plane_gate
from ..registry import register_attention
from .base import PlaneGateAttention
from .utils import check_positive_int, check_reduction, make_divisible


@register_plane_gate('SE')
def se_plane_gate(mean: torch.Tensor, var: Optional[torch.Tensor],
                  params: Sequence[torch.Tensor], eps: float
                  ) -> Tuple[None, torch.Tensor]:
    """SE's logit ``W2 ReLU(W1 GAP(x) + b1) + b2`` (Eq. 2-3) of every plane
    (no term in ``x - mean``)."""
    w1, b1, w2, b2 = params
    hidden = F.relu(F.linear(mean, w1.flatten(1), b1))
    return None, F.linear(hidden, w2.flatten(1), b2)


@register_attention('SE')
class SqueezeExcitation(PlaneGateAttention):
    """Squeeze-and-Excitation: channel gate from a bottleneck MLP on GAP(x).

    Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, Eq. 2-4:
    ``x * sigmoid(W2 ReLU(W1 GAP(x) + b1) + b2)`` with ``W1: C -> C/r`` and
    ``W2: C/r -> C``, both with biases as in the paper.

    Placement: after ``bn3`` of each bottleneck, before the residual add.

    Parameters: ``2 * C * h + h + C`` with hidden width ``h = C // r``
    (2,530,992 for ResNet-50 with ``r=16``: SE-ResNet-50 = 28,088,024).

    The gate is a logit per (sample, channel) from the plane means, so
    :func:`mmsa.ops.block_end` runs it as one statistics pass and one
    element-wise pass (on CUDA with the block's ``bn3``, residual add and
    ReLU folded in). Compatible with ``torch.compile(fullgraph=True)``.

    Args:
        in_channels (int): Channels C of the input.
        reduction (int): Reduction ratio r. Defaults to 16.
        divisor (int, optional): Round the hidden width to a multiple of this
            (timm/mmpretrain style, e.g. 8). Defaults to None: ``C // r``
            exactly, as in the paper.
        impl (str): ``'auto'``, ``'triton'`` or ``'reference'``.
            Defaults to ``'auto'``.
        init_cfg (dict, optional): mmengine initialisation config.
            Defaults to None.
    """

    _abbr_ = 'se'

    def __init__(self,
                 in_channels: int,
                 reduction: int = 16,
                 divisor: Optional[int] = None,
                 impl: str = 'auto',
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
        self._set_impl(impl)
        self.fc1 = nn.Conv2d(in_channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, in_channels, 1)

    def plane_gate(self) -> PlaneGate:
        return PlaneGate('SE', (self.fc1.weight, self.fc1.bias,
                                self.fc2.weight, self.fc2.bias),
                         uses_var=False)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, '
                f'hidden_channels={self.hidden_channels}, impl={self.impl!r}')
