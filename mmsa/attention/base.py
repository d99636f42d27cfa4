"""The protocol every mmsa attention follows.

``forward(x)``: the attention of ``x``, a tensor of ``x``'s shape, dtype and
memory format (the signature of stock mmcv plugins and timm's modules).
Every module takes ``impl``, validated against the paths it has
(``IMPLS``); ``'auto'`` picks the fastest for the input's device and
``MMSA_IMPL`` sets the process-wide default (:mod:`mmsa.ops.dispatch`).

The end of a ResNet block, ``relu(attention(norm(z)) + identity)``, is one
op, :func:`mmsa.ops.block_end`. An attention the op can fuse says what it
needs:

* :class:`PlaneGateAttention` (SA, SE, ECA): ``x * sigmoid(p * (x - mean)
  + q)`` with p and q per (sample, channel) from the plane's mean and
  variance; :meth:`plane_gate` hands over the function and its tensors, and
  the kernels fold the block's BatchNorm into the same passes;
* :class:`GateAttention` (CBAM, SGE): ``x * gc * gs``; :meth:`gates`
  computes the gates, one kernel pass applies them with the residual and
  the ReLU.

The others compute their output in their forward, and the op adds the
identity and applies the ReLU after it.
"""
from typing import Optional, Sequence, Tuple

import torch
from mmengine.model import BaseModule

from ..ops.block_end import block_end, check_block_input
from ..ops.block_end_reference import PlaneGate, plane_gate_reference
from ..ops.dispatch import check_impl

__all__ = ['check_block_input', 'AttentionImpl', 'PlaneGateAttention',
           'GateAttention']


class AttentionImpl:
    """The ``impl`` choice of an attention: a name from its ``IMPLS``
    (``'auto'``, then the paths it has), checked when it is set."""

    IMPLS: Sequence[str] = ('auto', 'reference')

    def _set_impl(self, impl: str) -> None:
        check_impl(f'{type(self).__name__}(in_channels={self.in_channels})',
                   impl, self.IMPLS)
        self.impl = impl


class PlaneGateAttention(AttentionImpl, BaseModule):
    """Base of the attentions ``x * sigmoid(p * (x - mean) + q)``.

    Subclasses implement :meth:`plane_gate`; the function it names is
    registered with :func:`mmsa.ops.register_plane_gate`.
    """

    IMPLS = ('auto', 'triton', 'cpu', 'reference')

    def plane_gate(self) -> PlaneGate:
        raise NotImplementedError

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The attention as PyTorch ops (the reference path)."""
        return plane_gate_reference(x, self.plane_gate())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return block_end(x, self)


class GateAttention(AttentionImpl, BaseModule):
    """Base of the attentions whose output is ``x * gate``.

    Subclasses implement :meth:`gates`, returning a channel gate (N x C) and
    a spatial gate (N x G x H x W, shared by the C/G channels of each
    group), either of which may be None.
    """

    IMPLS = ('auto', 'triton', 'reference')

    def gates(self, x: torch.Tensor
              ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return block_end(x, self)
