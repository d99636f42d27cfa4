"""The Triton block end under ``torch.compile``: custom ops with fakes.

Dynamo cannot trace into Triton launches wrapped in an autograd.Function
whose backward differentiates the N x C functions again, so under
``torch.compile`` the same host functions (``block_end_fused.py``) run as
three ``torch.library`` custom ops, which the compiler keeps as opaque
calls (each launching on its input's GPU, as the eager path does: a
compiled graph need not make that GPU the current one) and whose fake
implementations give it shapes:
``mmsa::block_end`` (the moments, the N x C functions and the apply pass),
and for its backward ``mmsa::block_end_sums`` and
``mmsa::block_end_input_grads`` around the N x C functions' backward, which
the compiler traces. The running statistics are updated outside the op, in
traced PyTorch. ``torch.library.custom_op`` exists from torch 2.4; before,
:data:`block_end_compiled` is None and the composition runs.
"""
from typing import List, Optional

import torch

from . import block_end_fused as fused
from .norm_fold import NormFold, batch_moments, update_running_stats
from .triton_support import folded, load_kernels, new_like, on_device

__all__ = ['block_end_compiled']

Tensor = torch.Tensor

_NO_NORM, _RUNNING, _BATCH = 0, 1, 2


def _fold(norm: int, eps: float) -> Optional[NormFold]:
    if norm == _NO_NORM:
        return None
    return NormFold(batch_stats=norm == _BATCH, update=False, eps=eps,
                    momentum=None)


def _gate(function: str, eps: float, shuffle: int, uses_var: bool):
    return fused.GateMeta(function, eps, shuffle, uses_var)


def _define():
    ops = torch.library

    @ops.custom_op('mmsa::block_end', mutates_args=())
    def forward(z: Tensor, identity: Optional[Tensor],
                weight: Optional[Tensor], bias: Optional[Tensor],
                running_mean: Optional[Tensor],
                running_var: Optional[Tensor], params: List[Tensor],
                function: str, gate_eps: float, shuffle: int,
                uses_var: bool, norm: int, norm_eps: float) -> List[Tensor]:
        kernels = load_kernels('block_end_triton').KERNELS
        with on_device(z):
            y, shift, mean, var, _ = fused.forward(
                kernels, z, identity, _fold(norm, norm_eps),
                (weight, bias, running_mean, running_var),
                _gate(function, gate_eps, shuffle, uses_var), params)
        return [y, shift, mean, var]

    @forward.register_fake
    def _(z, identity, weight, bias, running_mean, running_var, params,
          function, gate_eps, shuffle, uses_var, norm, norm_eps):
        n, c = z.shape[:2]
        f32 = dict(dtype=torch.float32)
        return [new_like(folded(z, z)[0]), z.new_empty(c, **f32),
                z.new_empty((n, c), **f32), z.new_empty((n, c), **f32)]

    @ops.custom_op('mmsa::block_end_sums', mutates_args=())
    def sums(grad_y: Tensor, z: Tensor, y: Optional[Tensor], shift: Tensor,
             mean: Tensor, a: Optional[Tensor], m: Tensor,
             p: Optional[Tensor], q: Tensor, shuffle: int) -> Tensor:
        with on_device(z):
            return load_kernels('block_end_triton').gradient_sums(
                grad_y, z, y, shift, mean, a, m, p, q, shuffle)

    @sums.register_fake
    def _(grad_y, z, y, shift, mean, a, m, p, q, shuffle):
        return z.new_empty((4, ) + tuple(z.shape[:2]), dtype=torch.float32)

    @ops.custom_op('mmsa::block_end_input_grads', mutates_args=())
    def input_grads(grad_y: Tensor, z: Tensor, y: Optional[Tensor],
                    shift: Tensor, mean: Tensor, a: Optional[Tensor],
                    m: Tensor, p: Optional[Tensor], q: Tensor, alpha: Tensor,
                    beta: Tensor, shuffle: int,
                    write_identity: bool) -> List[Tensor]:
        with on_device(z):
            return load_kernels('block_end_triton').input_gradients(
                grad_y, z, y, shift, mean, a, m, p, q, alpha, beta,
                shuffle, write_identity)

    @input_grads.register_fake
    def _(grad_y, z, y, shift, mean, a, m, p, q, alpha, beta, shuffle,
          write_identity):
        # the layouts input_gradients allocates (a fake's strides must be
        # the real output's: inductor asserts them)
        z = folded(z, z)[0]
        return [new_like(z), new_like(folded(grad_y, z)[0])
                if write_identity else z.new_empty(0)]

    def setup_context(ctx, inputs, output):
        (z, identity, weight, bias, running_mean, running_var, params,
         function, gate_eps, shuffle, uses_var, norm, norm_eps) = inputs
        y, shift, mean, var = output
        running = norm == _RUNNING
        ctx.save_for_backward(z, y if identity is not None else None, shift,
                              mean, var, weight, bias,
                              running_mean if running else None,
                              running_var if running else None, *params)
        ctx.meta = (_fold(norm, norm_eps),
                    (function, gate_eps, shuffle, uses_var),
                    [t.requires_grad for t in params])

    def backward(ctx, grads):
        fold, gate, params_need = ctx.meta
        saved = ctx.saved_tensors
        z, y, shift, mean, var, weight, bias, rm, rv = saved[:9]
        need = ctx.needs_input_grad
        kernels = load_kernels('block_end_triton').KERNELS._replace(
            gradient_sums=sums, input_gradients=input_grads)
        got = fused.backward(
            kernels, grads[0], z, y, shift, mean, var, fold,
            (weight, bias, rm, rv), _gate(*gate), saved[9:], (),
            (need[0], need[1], need[2], need[3], *params_need))
        return (*got[:4], None, None, list(got[4:]), None, None, None, None,
                None, None)

    forward.register_autograd(backward, setup_context=setup_context)

    def block_end_compiled(z: Tensor, identity: Optional[Tensor],
                           fold: Optional[NormFold],
                           norm: Optional[torch.nn.Module], gate) -> Tensor:
        """:func:`~mmsa.ops.block_end_triton.block_end_triton` as a custom
        op (no SyncBatchNorm: its norm runs in PyTorch before)."""
        if fold is None:
            tensors, mode, eps = (None, ) * 4, _NO_NORM, 0.
        else:
            tensors = (norm.weight, norm.bias, norm.running_mean,
                       norm.running_var)
            mode = _BATCH if fold.batch_stats else _RUNNING
            eps = fold.eps
        y, shift, mean, var = forward(z, identity, *tensors,
                                      list(gate.params), gate.function,
                                      gate.eps, gate.shuffle, gate.uses_var,
                                      mode, eps)
        if fold is not None and fold.update:
            batch = batch_moments(shift, mean, var, z.shape[2] * z.shape[3])
            update_running_stats(fold, shift, batch, norm.running_mean,
                                 norm.running_var, norm.num_batches_tracked)
        return y

    return block_end_compiled


#: The custom-op block end, or None where torch has no ``custom_op``.
block_end_compiled = (_define() if hasattr(torch.library, 'custom_op') else
                      None)
