"""Efficient Channel Attention (ECA-Net)."""
from typing import Optional, Union

import torch
import torch.nn as nn

from ..registry import register_attention
from .base import GateAttention
from .utils import check_odd_kernel, check_positive_int, eca_kernel_size


@register_attention('ECA')
class EfficientChannelAttention(GateAttention):
    """ECA: channel gate from a 1-D convolution across pooled channels.

    Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional
    Neural Networks", CVPR 2020; official code BangguWu/ECANet.
    ``x * sigmoid(conv1d_k(GAP(x)))`` with a bias-free 1->1 channel conv over
    the channel axis, zero padding ``(k - 1) / 2``.

    ``kernel_size='auto'`` applies the paper's rule (Eq. 12,
    ``gamma=2, b=1``, nearest odd). The released ImageNet ResNet-50 does not
    follow it: it used k = 3, 5, 5, 7 per stage (ResNet-50 +80 parameters);
    pass those explicitly to load its weights.

    Placement: after ``bn3`` of each bottleneck, before the residual add.

    Parameters: ``k`` (no bias). The weight is named ``conv.weight`` as in
    the official code.

    Compatible with ``torch.compile(fullgraph=True)``.

    Args:
        in_channels (int): Channels C of the input.
        kernel_size (int | str): Odd kernel size k, or ``'auto'``.
            Defaults to ``'auto'``.
        gamma (int): Rule parameter gamma for ``'auto'``. Defaults to 2.
        b (int): Rule parameter b for ``'auto'``. Defaults to 1.
        init_cfg (dict, optional): mmengine initialisation config.
            Defaults to None.
    """

    _abbr_ = 'eca'

    def __init__(self,
                 in_channels: int,
                 kernel_size: Union[int, str] = 'auto',
                 gamma: int = 2,
                 b: int = 1,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_positive_int('ECA', 'in_channels', in_channels,
                           in_channels=in_channels)
        if kernel_size == 'auto':
            check_positive_int('ECA', 'gamma', gamma, gamma=gamma)
            kernel_size = eca_kernel_size(in_channels, gamma, b)
        elif isinstance(kernel_size, str):
            raise ValueError(
                f'ECA(in_channels={in_channels}, kernel_size={kernel_size!r})'
                f": kernel_size must be an odd int or 'auto'; try "
                f"kernel_size='auto'")
        check_odd_kernel('ECA', kernel_size, in_channels=in_channels)
        if kernel_size > in_channels:
            # The conv slides across the C pooled channels: the taps beyond
            # them only ever see the zero padding.
            largest = in_channels if in_channels % 2 else in_channels - 1
            raise ValueError(
                f'ECA(in_channels={in_channels}, kernel_size={kernel_size}): '
                f'kernel_size must not exceed in_channels (the 1-D conv runs '
                f'across the channels); try kernel_size={largest} or '
                f"kernel_size='auto' (the paper's rule)")
        self.in_channels = in_channels
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(
            1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def gates(self, x: torch.Tensor) -> tuple:
        n, c = x.shape[:2]
        y = self.conv(x.mean((2, 3)).reshape(n, 1, c))
        return y.reshape(n, c).sigmoid(), None

    def extra_repr(self) -> str:
        return f'in_channels={self.in_channels}, kernel_size={self.kernel_size}'
