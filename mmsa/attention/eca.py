"""Efficient Channel Attention (ECA-Net)."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.block_end_reference import PlaneGate, register_plane_gate
from ..registry import register_attention
from .base import PlaneGateAttention
from .utils import check_odd_kernel, check_positive_int, eca_kernel_size


@register_plane_gate('ECA')
def eca_plane_gate(mean: torch.Tensor, var: Optional[torch.Tensor],
                   params: Sequence[torch.Tensor], eps: float
                   ) -> Tuple[None, torch.Tensor]:
    """ECA's logit, a 1-D convolution across the plane means (zero
    padding), of every plane (no term in ``x - mean``)."""
    weight, = params
    n, c = mean.shape
    # a Python int: torch 2.1's ONNX tracer would make a traced size of it
    # and pass conv1d an empty padding
    pad = (int(weight.shape[-1]) - 1) // 2
    return None, F.conv1d(mean.reshape(n, 1, c), weight,
                          padding=pad).reshape(n, c)


@register_attention('ECA')
class EfficientChannelAttention(PlaneGateAttention):
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

    The gate is a logit per (sample, channel) from the plane means, so
    :func:`mmsa.ops.block_end` runs it as one statistics pass and one
    element-wise pass (on CUDA with the block's ``bn3``, residual add and
    ReLU folded in). Compatible with ``torch.compile(fullgraph=True)``.

    Args:
        in_channels (int): Channels C of the input.
        kernel_size (int | str): Odd kernel size k, or ``'auto'``.
            Defaults to ``'auto'``.
        gamma (int): Rule parameter gamma for ``'auto'``. Defaults to 2.
        b (int): Rule parameter b for ``'auto'``. Defaults to 1.
        impl (str): ``'auto'``, ``'triton'`` or ``'reference'``.
            Defaults to ``'auto'``.
        init_cfg (dict, optional): mmengine initialisation config.
            Defaults to None.
    """

    _abbr_ = 'eca'

    def __init__(self,
                 in_channels: int,
                 kernel_size: Union[int, str] = 'auto',
                 gamma: int = 2,
                 b: int = 1,
                 impl: str = 'auto',
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
        self._set_impl(impl)
        self.conv = nn.Conv1d(
            1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def plane_gate(self) -> PlaneGate:
        return PlaneGate('ECA', (self.conv.weight, ), uses_var=False)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, '
                f'kernel_size={self.kernel_size}, impl={self.impl!r}')
