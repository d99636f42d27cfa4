"""The end of a ResNet block as one op, ``relu(attention(norm(z)) +
identity)``.

Every mmsa ResNet block ends here (``after_conv3``); every attention's own
``forward(x)`` is the same op without a norm and an identity. The paths:

* SA, SE, ECA (plane gates, ``plane_gate()``) after a BatchNorm: the norm
  folded into the attention's statistics pass, the attention, the residual
  add and the ReLU in one element-wise pass, two passes back
  (``block_end_fused.py``), by the Triton kernels on CUDA, or on CPU
  tensors under ``TRITON_INTERPRET=1`` with ``impl='triton'``
  (``block_end_triton.py``), and by C++ kernels on CPU
  (``block_end_cpu.py``); without a BatchNorm the Triton kernels run the
  norm in PyTorch first, and on CPU SA's own kernel does the attention, add
  and ReLU after it (``sa_cpu_kernel.py``);
* CBAM, SGE (``gates(x)``): the norm and the gates in PyTorch, then one
  Triton pass for the gating, add and ReLU on CUDA (``triton_gate.py``);
* everything else, and ``impl='reference'``, export and tracing: the
  PyTorch composition (``block_end_reference.py``).

Under ``torch.compile`` the Triton path is one custom op
(``block_end_compile.py``, torch >= 2.4), else the composition.
"""
from typing import Optional

import torch
import torch.nn as nn

from ..utils.compat import is_compiling, is_exporting
from .block_end_compile import block_end_compiled
from .block_end_cpu import block_end_cpu, block_end_cpu_unsupported
from .block_end_reference import (block_end_reference, gate_reference,
                                  like_input)
from .dispatch import log_fallback_once, resolve_impl
from .norm_fold import norm_fold
from .sa_cpu_kernel import sa_cpu_if_supported, sa_cpu_unsupported
from .triton_support import load_kernels, triton_unsupported

__all__ = ['block_end', 'check_block_input']

Tensor = torch.Tensor


def _describe(module: nn.Module) -> str:
    return f'{type(module).__name__}({module.extra_repr()})'


def check_block_input(module: nn.Module, z: Tensor,
                      identity: Optional[Tensor] = None) -> None:
    """One check for every attention and block end: an N x
    ``module.in_channels`` x H x W floating-point input with H, W >= 1,
    and an identity of its shape on its device. Cheap comparisons on the
    hot path; the message, naming the module, only for bad input."""
    # (not in an exporter's trace, which would record the check's values)
    if torch.jit.is_tracing() or (
            z.dim() == 4 and z.shape[1] == module.in_channels
            and z.shape[2] * z.shape[3] > 0 and z.is_floating_point()
            and (identity is None or (identity.shape == z.shape
                                      and identity.device == z.device))):
        return
    c = module.in_channels
    if z.dim() != 4:
        problem = (f'expected a 4-D input N x {c} x H x W, got '
                   f'{z.dim()}-D shape {tuple(z.shape)}')
    elif z.shape[1] != c:
        problem = (f'expected {c} channels (N x {c} x H x W), got an input '
                   f'of shape {tuple(z.shape)}; build it with '
                   f'in_channels={z.shape[1]} or feed it the layer it was '
                   f'built for')
    elif z.shape[2] * z.shape[3] == 0:
        problem = (f'got an input of shape {tuple(z.shape)} with no '
                   f'positions (H x W = {z.shape[2]} x {z.shape[3]}); the '
                   f'input image is too small for this stage')
    elif not z.is_floating_point():
        problem = (f'expected a floating-point input, got {z.dtype}; '
                   f'convert it with .float()')
    elif identity.shape != z.shape:
        problem = (f'identity shape {tuple(identity.shape)} differs from '
                   f"the input's {tuple(z.shape)}; the block's identity (or "
                   f'its downsample) must match the attention input')
    else:
        problem = (f'the identity is on {identity.device}, the input on '
                   f'{z.device}; both must be on one device')
    raise ValueError(f'{_describe(module)}: {problem}')


def _sa_cpu(x: Tensor, identity: Optional[Tensor], gate) -> Optional[Tensor]:
    cweight = gate.params[0]
    groups = x.shape[1] // (2 * cweight.numel())
    return sa_cpu_if_supported(x, identity, *gate.params, groups, gate.eps)


#: The C++ kernels by plane-gate function: attention, residual and ReLU.
CPU_KERNELS = {'SA': (_sa_cpu, sa_cpu_unsupported)}


def block_end(z: Tensor,
              attention: nn.Module,
              norm: Optional[nn.Module] = None,
              identity: Optional[Tensor] = None) -> Tensor:
    """``relu(attention(norm(z)) + identity)`` by the fastest path that takes
    it (see the module doc); without ``norm`` the attention's input is
    ``z``, without ``identity`` there is no add and no ReLU. The path is
    ``attention.impl`` (or ``MMSA_IMPL``); one that cannot take the input
    runs the composition and says why once. The result has ``z``'s dtype
    and memory format."""
    check_block_input(attention, z, identity)
    impl = resolve_impl(attention)
    if impl == 'reference' or is_exporting():
        return block_end_reference(z, attention, norm, identity)
    triton = impl == 'triton' or (impl == 'auto' and z.device.type != 'cpu')
    if hasattr(attention, 'plane_gate'):
        gate = attention.plane_gate()
        if triton:
            return _plane_gate_triton(z, attention, norm, identity, gate)
        if not is_compiling():
            out = _plane_gate_cpu(z, attention, norm, identity, gate)
            if out is not None:
                return out
    elif hasattr(attention, 'gates') and triton:
        x = z if norm is None else norm(z)
        channel_gate, spatial_gate = attention.gates(x)
        reason = triton_unsupported(x)
        if reason is None and not is_compiling():
            return load_kernels('triton_gate').gate_triton(
                x, channel_gate, spatial_gate, identity)
        if reason is not None:
            log_fallback_once(type(attention).__name__, reason)
        return like_input(
            gate_reference(x, channel_gate, spatial_gate, identity), z)
    return block_end_reference(z, attention, norm, identity)


def _plane_gate_cpu(z: Tensor, attention: nn.Module,
                    norm: Optional[nn.Module], identity: Optional[Tensor],
                    gate) -> Optional[Tensor]:
    """The C++ paths of a plane gate: with a BatchNorm the fused block end
    (SA, SE, ECA), else SA's kernel after the norm; None where neither
    applies (then the composition runs)."""
    kernel, unsupported = CPU_KERNELS.get(gate.function, (None, None))
    fold = None if norm is None else norm_fold(norm)[0]
    if fold is not None:
        reason = block_end_cpu_unsupported(z)
        if reason is None:
            return like_input(block_end_cpu(z, identity, fold, norm, gate),
                              z)
        if kernel is None:  # (SA's kernel says why if it declines too)
            log_fallback_once(type(attention).__name__, reason)
    if kernel is None:
        return None
    x = z if norm is None else norm(z)
    out = kernel(x, identity, gate)
    if out is not None:
        return like_input(out, z)
    log_fallback_once(type(attention).__name__, unsupported(x))
    return block_end_reference(x, attention, None, identity)


def _plane_gate_triton(z: Tensor, attention: nn.Module,
                       norm: Optional[nn.Module], identity: Optional[Tensor],
                       gate) -> Tensor:
    """The Triton path of a plane gate; a norm the kernels do not fold
    runs in PyTorch first."""
    reason = triton_unsupported(z)
    if reason is not None:
        log_fallback_once(type(attention).__name__, reason)
        return block_end_reference(z, attention, norm, identity)
    fold = None
    if norm is not None:
        fold, _ = norm_fold(norm)
        if fold is None or (fold.group is not None and is_compiling()):
            z, norm, fold = norm(z), None, None
    if is_compiling():
        if block_end_compiled is None:  # torch < 2.4: no custom ops
            return block_end_reference(z, attention, norm, identity)
        return block_end_compiled(z, identity, fold, norm, gate)
    return load_kernels('block_end_triton').block_end_triton(
        z, identity, fold, norm, gate)
