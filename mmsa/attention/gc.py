"""Global Context block, reusing mmcv's ``ContextBlock``."""
from typing import Sequence

import torch
from mmcv.cnn import ContextBlock

from ..registry import register_attention
from .base import AttentionImpl, check_block_input
from .utils import check_choice, module_repr


@register_attention('GC')
class GlobalContext(AttentionImpl, ContextBlock):
    """GCNet's global context block under mmsa's name and interface.

    Cao et al., "GCNet: Non-local Networks Meet Squeeze-Excitation Networks
    and Beyond", ICCVW 2019. The math is mmcv's ``ContextBlock`` unchanged
    (attention pooling -> 1x1 -> LN -> ReLU -> 1x1 -> add); this subclass
    only adds the paper's default ratio, validation with clear messages and
    the ``gc`` attribute name.

    Placement: after ``bn3`` (mmdet GCNet configs: stages 2-4).

    Parameters (``fusion_types=('channel_add',)``, ``pooling_type='att'``):
    ``C + 1`` (mask conv) ``+ 2 * C * P + P + C`` (two 1x1 convs)
    ``+ 2 * P`` (LayerNorm) with ``P = int(C * ratio)``.

    Args:
        in_channels (int): Channels C of the input.
        ratio (float): Bottleneck ratio. Defaults to 1/16 (paper's r=16).
        pooling_type (str): ``'att'`` or ``'avg'``. Defaults to ``'att'``.
        fusion_types (Sequence[str]): Subset of ``('channel_add',
            'channel_mul')``. Defaults to ``('channel_add',)``.
        impl (str): ``'auto'`` or ``'reference'`` (the same composition).
            Defaults to ``'auto'``.
    """

    _abbr_ = 'gc'

    def __init__(self,
                 in_channels: int,
                 ratio: float = 1. / 16,
                 pooling_type: str = 'att',
                 fusion_types: Sequence[str] = ('channel_add', ),
                 impl: str = 'auto') -> None:
        ctx = dict(in_channels=in_channels, ratio=ratio)
        if not (isinstance(ratio, (int, float)) and ratio > 0
                and int(in_channels * ratio) >= 1):
            raise ValueError(
                f'{module_repr("GC", **ctx)}: in_channels * ratio must be '
                f'>= 1 (bottleneck width); try ratio={1. / min(16, in_channels)}')
        check_choice('GC', 'pooling_type', pooling_type, ('att', 'avg'), **ctx)
        fusion_types = tuple(fusion_types)
        if not fusion_types:
            raise ValueError(f'{module_repr("GC", **ctx)}: fusion_types must '
                             f"not be empty; try ('channel_add',)")
        for fusion in fusion_types:
            check_choice('GC', 'fusion_types', fusion,
                         ('channel_add', 'channel_mul'), **ctx)
        super().__init__(in_channels, ratio, pooling_type, fusion_types)
        self.in_channels = in_channels
        self._set_impl(impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """mmcv's forward, after mmsa's input check."""
        check_block_input(self, x)
        return super().forward(x)
