"""Non-local block, reusing mmcv's ``NonLocal2d``."""
from typing import Optional

import torch
from mmcv.cnn import NonLocal2d

from ..registry import register_attention
from .base import AttentionImpl, check_block_input
from .utils import check_choice, check_reduction


@register_attention('NonLocal')
class NonLocal(AttentionImpl, NonLocal2d):
    """Non-local block under mmsa's name and interface.

    Wang et al., "Non-local Neural Networks", CVPR 2018. The math is mmcv's
    ``NonLocal2d`` unchanged; this subclass adds validation with clear
    messages and the ``nl`` attribute name.

    Placement: after a bottleneck's ``bn3`` or between stages (the paper adds
    5 blocks to res3/res4 of ResNet-50).

    Parameters (``embedded_gaussian``, no norm): ``3 * (C * P + P)`` for
    g/theta/phi and ``P * C + C`` for the output conv, ``P = C // reduction``.

    Args:
        in_channels (int): Channels C of the input.
        reduction (int): Channel reduction of the embeddings. Defaults to 2.
        use_scale (bool): Scale pairwise weights by ``1/sqrt(P)``.
            Defaults to True.
        mode (str): ``'embedded_gaussian'``, ``'gaussian'``,
            ``'dot_product'`` or ``'concatenation'``.
            Defaults to ``'embedded_gaussian'``.
        norm_cfg (dict, optional): Norm after the output conv.
            Defaults to None.
        impl (str): ``'auto'`` or ``'reference'`` (the same composition).
            Defaults to ``'auto'``.
    """

    _abbr_ = 'nl'

    def __init__(self,
                 in_channels: int,
                 reduction: int = 2,
                 use_scale: bool = True,
                 mode: str = 'embedded_gaussian',
                 norm_cfg: Optional[dict] = None,
                 impl: str = 'auto') -> None:
        check_reduction('NonLocal', in_channels, reduction)
        check_choice('NonLocal', 'mode', mode,
                     ('embedded_gaussian', 'gaussian', 'dot_product',
                      'concatenation'), in_channels=in_channels)
        super().__init__(in_channels, reduction=reduction,
                         use_scale=use_scale, mode=mode, norm_cfg=norm_cfg)
        self._set_impl(impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """mmcv's forward, after mmsa's input check."""
        check_block_input(self, x)
        return super().forward(x)
