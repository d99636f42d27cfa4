"""The protocol every mmsa attention follows.

``forward(x, identity=None)``: the attention of ``x``, a tensor of ``x``'s
shape, dtype and memory format; given the ResNet block's ``identity``,
``relu(attention(x) + identity)``, the end of the block. The backbones call
every attention at the end of a block that way, so a module whose last step
is an element-wise pass does the add and the ReLU in that same pass.

Most attentions multiply their input by a gate. They subclass
:class:`GateAttention` and compute only the gates;
:func:`~mmsa.ops.apply_gates` applies them (one Triton pass on CUDA).
"""
from typing import Optional, Tuple

import torch
from mmengine.model import BaseModule

from ..ops.gate import apply_gates

__all__ = ['check_input', 'end_block', 'GateAttention']


def _describe(module: torch.nn.Module) -> str:
    return f'{type(module).__name__}({module.extra_repr()})'


def check_input(module: torch.nn.Module, x: torch.Tensor) -> None:
    """Require an N x ``module.in_channels`` x H x W input with H, W >= 1.

    Two integer comparisons on the hot path; the message is built only for
    a bad input, naming the module, the shape and what it takes.
    """
    # (not in an exporter's trace, which would record the check's values)
    if torch.jit.is_tracing() or (x.dim() == 4 and x.shape[1] ==
                                  module.in_channels and
                                  x.shape[2] * x.shape[3] > 0):
        return
    if x.dim() != 4:
        problem = (f'expected a 4-D input N x {module.in_channels} x H x W,'
                   f' got {x.dim()}-D shape {tuple(x.shape)}')
    elif x.shape[1] != module.in_channels:
        problem = (f'expected {module.in_channels} channels (N x '
                   f'{module.in_channels} x H x W), got an input of shape '
                   f'{tuple(x.shape)}; build it with '
                   f'in_channels={x.shape[1]} or feed it the layer it was '
                   f'built for')
    else:
        problem = (f'got an input of shape {tuple(x.shape)} with no '
                   f'positions (H x W = {x.shape[2]} x {x.shape[3]}); the '
                   f'input image is too small for this stage')
    raise ValueError(f'{_describe(module)}: {problem}')


def end_block(out: torch.Tensor,
              identity: Optional[torch.Tensor]) -> torch.Tensor:
    """``relu(out + identity)`` (``out`` itself without an identity), in
    place on ``out``, which must be the attention's own fresh output."""
    if identity is None:
        return out
    if identity.shape != out.shape:
        raise ValueError(
            f'identity shape {tuple(identity.shape)} differs from the '
            f"attention output's {tuple(out.shape)}; the block's identity "
            f'(or its downsample) must match it')
    out += identity
    return torch.relu_(out)


class GateAttention(BaseModule):
    """Base of the attentions whose output is ``x * gate``.

    Subclasses implement :meth:`gates`, returning a channel gate (N x C) and
    a spatial gate (N x G x H x W, shared by the C/G channels of each
    group), either of which may be None. Set ``impl`` on an instance to
    ``'reference'`` (or ``'triton'``) to force the gate epilogue's path;
    ``'auto'`` takes the Triton kernel on CUDA.
    """

    impl = 'auto'

    def gates(self, x: torch.Tensor
              ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        raise NotImplementedError

    def forward(self,
                x: torch.Tensor,
                identity: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x * gates``; with ``identity``, ``relu(x * gates + identity)``.
        """
        check_input(self, x)
        channel_gate, spatial_gate = self.gates(x)
        return apply_gates(x, channel_gate, spatial_gate, identity,
                           self.impl)
