"""The end of a ResNet block as PyTorch ops: what every kernel must equal.

``block_end_reference(z, attention, norm, identity)`` is
``relu(attention(norm(z)) + identity)``, the attention by its ``reference``
composition (or its forward). The kernels know the attentions in one of two
forms:

* a **plane gate** (SA, SE, ECA): ``x * sigmoid(p * (x - mean) + q)`` with
  ``p`` and ``q`` per (sample, channel) computed from that plane's mean
  and variance by a small function registered under a name
  (:func:`register_plane_gate`), the output channels optionally shuffled
  (:func:`plane_gate_reference` is that form as PyTorch ops);
* **gates** (CBAM, SGE): ``x * gc * gs``, a channel gate (N x C) and a
  spatial gate (N x G x H x W shared by the C/G channels of each group),
  computed by the module's ``gates(x)``.

The result has ``z``'s dtype and memory format.
"""
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ['PlaneGate', 'PLANE_GATES', 'register_plane_gate',
           'channel_shuffle', 'plane_gate_reference', 'gate_reference',
           'block_end_reference', 'like_input']

#: ``fn(mean, var, params, eps) -> (p or None, q)``: the gate's logit
#: ``p * (x - mean) + q`` of every (sample, channel) plane from its mean and
#: variance (N x C each; ``var`` is None for a gate that does not use it).
GateFunction = Callable[
    [torch.Tensor, Optional[torch.Tensor], Sequence[torch.Tensor], float],
    Tuple[Optional[torch.Tensor], torch.Tensor]]

#: The plane-gate functions by name; the kernels find them here.
PLANE_GATES: Dict[str, GateFunction] = {}


class PlaneGate(NamedTuple):
    """What a plane-gate attention hands the block-end op.

    Attributes:
        function (str): The name of its function in :data:`PLANE_GATES`.
        params (tuple): The tensors the function takes (the module's
            parameters), in the function's order.
        eps (float): The function's epsilon (0 where it has none).
        shuffle (int): Channel shuffle groups of the output (1: none).
        uses_var (bool): Whether the function reads the variance.
    """
    function: str
    params: Tuple[torch.Tensor, ...]
    eps: float = 0.
    shuffle: int = 1
    uses_var: bool = True


def register_plane_gate(name: str) -> Callable[[GateFunction],
                                               GateFunction]:
    """Register ``fn`` as the plane-gate function ``name``."""

    def register(fn: GateFunction) -> GateFunction:
        if PLANE_GATES.get(name, fn) is not fn:
            raise KeyError(f'plane gate {name!r} is already registered '
                           f'({PLANE_GATES[name].__qualname__})')
        PLANE_GATES[name] = fn
        return fn

    return register


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet shuffle: channel ``g*C/groups + i`` -> ``i*groups + g``."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(
        n, c, h, w)


def plane_gate_reference(x: torch.Tensor, gate: PlaneGate) -> torch.Tensor:
    """``x * sigmoid(p * (x - mean) + q)`` (shuffled) as PyTorch ops."""
    mean = x.mean((2, 3))
    var = x.var((2, 3), unbiased=False) if gate.uses_var else None
    p, q = PLANE_GATES[gate.function](mean, var, gate.params, gate.eps)
    logit = q[:, :, None, None]
    if p is not None:
        logit = p[:, :, None, None] * (x - mean[:, :, None, None]) + logit
    out = x * logit.sigmoid()
    if gate.shuffle > 1:
        out = channel_shuffle(out, gate.shuffle)
    return out


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
    return y


def block_end_reference(z: torch.Tensor,
                        attention: nn.Module,
                        norm: Optional[nn.Module] = None,
                        identity: Optional[torch.Tensor] = None
                        ) -> torch.Tensor:
    """``relu(attention(norm(z)) + identity)`` as PyTorch ops; without
    ``norm``, ``z`` is the attention's input; without ``identity``, no add
    and no ReLU."""
    x = z if norm is None else norm(z)
    if hasattr(attention, 'gates'):
        out = gate_reference(x, *attention.gates(x), identity)
        identity = None
    elif hasattr(attention, 'reference'):
        out = attention.reference(x)
    else:
        out = attention(x)
    if identity is not None:
        out = out + identity if out is x else out.add_(identity)
        out = torch.relu_(out)
    return like_input(out, z)


def like_input(out: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``out`` in ``z``'s dtype and memory format (type promotion with
    float32 parameters, or a reshape, may have changed them)."""
    if out.dtype != z.dtype:
        out = out.to(z.dtype)
    if not z.is_contiguous() and z.is_contiguous(
            memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out
