"""Shuffle Attention (SA-Net)."""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ..ops.shuffle_attention import (SA_IMPLS, apply_shuffle_attention,
                                     channel_shuffle)
from ..registry import register_attention
from ..utils.compat import is_compiling
from .base import check_input
from .utils import check_groups, module_repr

__all__ = ['ShuffleAttention', 'channel_shuffle']

IMPLS = SA_IMPLS


@register_attention('SA')
class ShuffleAttention(BaseModule):
    """Shuffle Attention: channel and spatial gates on grouped sub-features.

    Zhang & Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural
    Networks", ICASSP 2021 (arXiv:2102.00240); official code wofmanaf/SA-Net.

    The channels are split into ``groups`` groups and each group into two
    halves of ``k = C / (2 * groups)`` channels. The first half is gated by
    ``sigmoid(cweight * GAP(x) + cbias)`` (Eq. 2), the second by
    ``sigmoid(sweight * GN(x) + sbias)`` with ``GN = GroupNorm(k, k)``
    (Eq. 3); the halves are concatenated and the channels shuffled with two
    groups. The four ``(1, k, 1, 1)`` gate parameters are shared by all
    groups, and initialised as in the official code (weights 0, biases 1).

    Placement: in every ResNet bottleneck after ``bn3``, before the residual
    add (mmdet plugin position ``after_conv3``).

    Parameters: ``6k = 3 * C / groups`` (708 for the 16 blocks of ResNet-50
    with ``groups=64``). Names follow the official code (``cweight``,
    ``cbias``, ``sweight``, ``sbias``, ``gn.weight``, ``gn.bias``) so official
    checkpoints load by renaming the block prefix only.

    Compatible with ``torch.compile(fullgraph=True)``.

    Implementation (:func:`mmsa.ops.apply_shuffle_attention`): both kernels
    do one statistics pass and one element-wise pass with the shuffle folded
    into the output write. ``impl='auto'`` runs the Triton kernels on CUDA
    (float32/float16/bfloat16, contiguous or channels_last) and the C++
    kernel on CPU (float32/float64; bf16 under autocast is computed in
    float32); ``'triton'`` and ``'fused'`` (the C++ kernel) force one;
    where the chosen kernel cannot run, and under ``torch.compile`` (which
    fuses the composition itself) or ONNX export, the reference
    composition runs (one log line per reason). :attr:`path` says which
    ran. The output has the input's dtype and memory format. The ResNet
    backbones call it as ``sa(x, identity=identity)``, so that the
    kernels' pass also does the block's residual add and ReLU. The C++
    kernel reuses the storages of its earlier outputs once nothing holds
    them (up to ``MMSA_SA_CACHE_MB`` MiB, default 1024; see
    :func:`mmsa.ops.empty_output_cache`).

    Args:
        in_channels (int): Channels C of the input; divisible by
            ``2 * groups``.
        groups (int): Number of groups G. Defaults to 64 (official). The SA
            author suggests 32 or 16 where C is small.
        impl (str): ``'auto'``, ``'fused'`` (C++, CPU), ``'triton'`` or
            ``'reference'``; the kernels fall back to the reference where
            they cannot run. Defaults to ``'auto'``.
        init_cfg (dict, optional): mmengine initialisation config.
            Defaults to None.
    """

    _abbr_ = 'sa'

    def __init__(self,
                 in_channels: int,
                 groups: int = 64,
                 impl: str = 'auto',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        check_groups('SA', in_channels, groups, factor=2)
        if impl not in IMPLS:
            raise ValueError(
                f'{module_repr("SA", in_channels=in_channels, impl=impl)}: '
                f'impl must be one of {IMPLS}')
        self.in_channels = in_channels
        self.groups = groups
        self.impl = impl
        #: The path of the last eager forward: ``'triton'``, ``'fused'``
        #: or ``'reference'`` (``None`` before the first call).
        self.path: Optional[str] = None
        k = in_channels // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.gn = nn.GroupNorm(k, k)

    def _args(self, x: torch.Tensor) -> tuple:
        # From the parameter dicts: nn.Module.__getattr__ runs only after
        # the instance lookup has failed, ~8 us a parameter with the caches
        # cold after a large layer (56 us of a forward's ~300 us of Python
        # and dispatch on the 2-core box). Names not found there (a
        # parametrisation's property) take the attribute path.
        own, gn = self._parameters, self._modules['gn']
        gns = gn._parameters
        cw, cb, sw = own.get('cweight'), own.get('cbias'), own.get('sweight')
        sb, gw, gb = own.get('sbias'), gns.get('weight'), gns.get('bias')
        if (cw is None or cb is None or sw is None or sb is None or gw is None
                or gb is None):
            cw, cb, sw, sb = self.cweight, self.cbias, self.sweight, self.sbias
            gw, gb = gn.weight, gn.bias
        return (x, self.groups, cw, cb, sw, sb, gw, gb, gn.eps)

    def forward(self,
                x: torch.Tensor,
                identity: Optional[torch.Tensor] = None) -> torch.Tensor:
        """SA of ``x``; with ``identity``, ``relu(SA(x) + identity)``.

        The second form is the end of a ResNet block whose SA sits after the
        last norm (the backbones call it so): the kernels add the identity
        and apply the ReLU in SA's own element-wise pass, which saves the
        block two passes over the tensor (and its backward one).
        """
        check_input(self, x)
        out, path = apply_shuffle_attention(
            *self._args(x), residual=identity, impl=self.impl)
        # no attribute writes while dynamo traces; nn.Module's setattr is
        # slow, so only on a change
        if self.path != path and not is_compiling():
            self.path = path
        return out

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, groups={self.groups}, '
                f'impl={self.impl!r}')
