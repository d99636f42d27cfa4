"""The gate epilogue of the gating attentions: reference and dispatcher.

``apply_gates(x, gc, gs, identity)`` is ``x * gc * gs`` with a channel gate
``gc`` (N, C) and a spatial gate ``gs`` (N, G, H, W) shared by the C/G
channels of each group (either may be None), and, given the block's
``identity``, ``relu(x * gc * gs + identity)``: the end of a ResNet block.
On CUDA the Triton kernel (``triton_gate.py``) does it in one pass; the
reference composition runs elsewhere, under ``torch.compile`` and during
export. The result has ``x``'s dtype and memory format.
"""
from typing import Optional

import torch

from ..utils.compat import is_compiling, is_exporting
from .dispatch import log_fallback_once
from .triton_support import load_kernels, triton_unsupported

__all__ = ['apply_gates', 'gate_reference', 'GATE_IMPLS']

GATE_IMPLS = ('auto', 'triton', 'reference')


def gate_reference(x: torch.Tensor,
                   channel_gate: Optional[torch.Tensor] = None,
                   spatial_gate: Optional[torch.Tensor] = None,
                   identity: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x * gc * gs`` (+ identity, ReLU) as PyTorch ops, in the official
    modules' order: the channel gate first, then the spatial one."""
    n, c, h, w = x.shape
    y = x
    if channel_gate is not None:
        y = y * channel_gate.reshape(n, c, 1, 1)
    if spatial_gate is not None:
        g = spatial_gate.shape[1]
        y = (y.reshape(n, g, c // g, h, w) *
             spatial_gate.reshape(n, g, 1, h, w)).reshape(n, c, h, w)
    if identity is not None:
        # in place on the product (its backward keeps the factors, not it)
        y = y + identity if y is x else y.add_(identity)
        y = torch.relu_(y)
    return y if y.dtype == x.dtype else y.to(x.dtype)


def apply_gates(x: torch.Tensor,
                channel_gate: Optional[torch.Tensor] = None,
                spatial_gate: Optional[torch.Tensor] = None,
                identity: Optional[torch.Tensor] = None,
                impl: str = 'auto') -> torch.Tensor:
    """``x * gc * gs`` (+ identity, ReLU) by the fastest path that takes it.

    Args:
        x (Tensor): The input, N x C x H x W.
        channel_gate (Tensor, optional): N x C (or N x C x 1 x 1).
        spatial_gate (Tensor, optional): N x G x H x W with G dividing C;
            gate g multiplies channels g*C/G to (g+1)*C/G - 1.
        identity (Tensor, optional): The block's identity, ``x``'s shape.
        impl (str): ``'auto'`` (Triton on CUDA, else the reference),
            ``'triton'`` (where it cannot run: the reference, logged once)
            or ``'reference'``.
    """
    if identity is not None and identity.shape != x.shape:
        raise ValueError(
            f'identity shape {tuple(identity.shape)} differs from the '
            f"input's {tuple(x.shape)}; the block's identity (or its "
            f'downsample) must match the attention input')
    if impl == 'triton' or (impl == 'auto' and x.device.type != 'cpu'):
        if is_compiling() or is_exporting():
            return gate_reference(x, channel_gate, spatial_gate, identity)
        reason = triton_unsupported(x)
        if reason is None:
            return load_kernels('triton_gate').gate_triton(
                x, channel_gate, spatial_gate, identity)
        log_fallback_once('Gate epilogue', reason)
    return gate_reference(x, channel_gate, spatial_gate, identity)
