"""The fused block end's host: BN, a plane gate, residual and ReLU in two
passes forward and two backward, whatever runs the passes.

``y = relu(x * sigmoid(p * (x - m) + q) + identity)`` with ``x = BN(z)``,
the output channels optionally shuffled (SA), where ``p`` and ``q`` come
per (sample, channel) plane from the plane's mean and variance
(``block_end_reference.py`` has the form; SA, SE and ECA take it). Both BN
and the gate need only per-plane moments of ``z``, so:

* forward: one pass reads ``z`` for each plane's mean and variance (about
  a per-channel shift); PyTorch turns them into BN's affine map and the
  gate's ``p`` and ``q`` (N x C values, ``norm_fold.py`` and the module's
  function); one element-wise pass writes ``y``;
* backward: one pass for four per-plane sums of the ReLU-masked gradient
  (for BN's scale and shift and for ``p`` and ``q``), the N x C functions
  differentiated again in PyTorch from the saved moments, and one pass
  writing ``dz`` and the identity's gradient, ``x`` and the gate
  recomputed from ``z``.

Saved for backward: ``z`` (plain BN saves it too), ``y`` with the ReLU
(its mask; the next conv saves it anyway), the moments and the parameters.

The passes are a :class:`BlockEndKernels`: the Triton kernels
(``block_end_triton.py``, CUDA and the interpreter) or the C++ kernels
(``block_end_cpu.py``); ``block_end_compile.py`` wraps the Triton ones as
custom ops.
"""
from typing import Callable, List, NamedTuple, Optional, Sequence

import torch

from .block_end_reference import PLANE_GATES, PlaneGate
from .norm_fold import NormFold, fold_moments, update_running_stats

__all__ = ['BlockEndKernels', 'GateMeta', 'block_end_fused', 'forward',
           'backward']

Tensor = torch.Tensor


class BlockEndKernels(NamedTuple):
    """The four passes of a fused block end.

    Attributes:
        moments: ``moments(z) -> (shift, mean, var)``: each channel's first
            value (C,), each plane's mean of ``z - shift`` and its variance
            (N x C).
        apply: ``apply(z, identity, shift, mean, a, m, p, q, shuffle) ->
            y``: ``relu(x * sigmoid(p * (x - m) + q) + identity)`` with
            ``x = a * (z - shift - mean) + m`` (``a`` None: 1, ``p`` None:
            0; without an identity no add and no ReLU), the output channels
            shuffled in ``shuffle`` groups.
        gradient_sums: ``gradient_sums(grad_y, z, y, shift, mean, a, m, p,
            q, shuffle) -> (4, N, C)``: per plane the sums of ``g s``,
            ``u zc``, ``v`` and ``v zc``, with ``g`` the output gradient
            (masked by the ReLU where ``y`` is given), ``s`` the gate,
            ``zc = z - shift - mean``, ``v = g x s (1 - s)`` and
            ``u = g s + p v``.
        input_gradients: ``input_gradients(grad_y, z, y, shift, mean, a, m,
            p, q, alpha, beta, shuffle, write_identity) -> [dz, d_id]``:
            ``dz = a u + alpha + beta zc`` and, with ``write_identity``,
            the identity's gradient (the masked ``g``; else an empty
            tensor).
    """
    moments: Callable
    apply: Callable
    gradient_sums: Callable
    input_gradients: Callable


class GateMeta(NamedTuple):
    """A :class:`~mmsa.ops.block_end_reference.PlaneGate` without its
    tensors (what autograd may keep on its context)."""
    function: str
    eps: float
    shuffle: int
    uses_var: bool


def _coefficients(shift: Tensor, mean: Tensor, var: Tensor, plane: int,
                  fold: Optional[NormFold], norm: Sequence[Optional[Tensor]],
                  gate: GateMeta, params: Sequence[Tensor], saved=None):
    """(a, m, p, q, batch): BN's map and the gate's logit, N x C functions
    of the moments, differentiable, in the moments' dtype (float32 from
    the Triton kernels, also under autocast: they are tiny). ``norm``: BN's
    weight, bias, running mean and running variance."""
    weight, bias, running_mean, running_var = norm
    with torch.autocast(mean.device.type, enabled=False):
        a, m, var_x, batch = fold_moments(shift, mean, var, plane, fold,
                                          weight, bias, running_mean,
                                          running_var, saved)
        p, q = PLANE_GATES[gate.function](
            m, var_x if gate.uses_var else None,
            [t.to(mean.dtype) for t in params], gate.eps)
    return a, m, p, q, batch


def forward(kernels: BlockEndKernels, z: Tensor, identity: Optional[Tensor],
            fold: Optional[NormFold], norm: Sequence[Optional[Tensor]],
            gate: GateMeta, params: Sequence[Tensor]):
    """The forward passes: ``(y, shift, mean, var, batch)``; ``batch``: the
    batch statistics ``(mean, var, count, what SyncBatchNorm summed over
    the ranks)``, or None."""
    shift, mean, var = kernels.moments(z)
    plane = z.shape[2] * z.shape[3]
    with torch.no_grad():
        a, m, p, q, batch = _coefficients(shift, mean, var, plane, fold,
                                          norm, gate, params)
    y = kernels.apply(z, identity, shift, mean, a, m, p, q, gate.shuffle)
    return y, shift, mean, var, batch


def _leaf(t: Optional[Tensor], grad: bool) -> Optional[Tensor]:
    return None if t is None else t.detach().requires_grad_(grad)


def backward(kernels: BlockEndKernels, grad_y: Tensor, z: Tensor,
             y: Optional[Tensor], shift: Tensor, mean: Tensor, var: Tensor,
             fold: Optional[NormFold], norm: Sequence[Optional[Tensor]],
             gate: GateMeta, params: Sequence[Tensor],
             reduced: Sequence[Tensor],
             needs: Sequence[bool]) -> List[Optional[Tensor]]:
    """The backward passes: gradients of ``z``, the identity (with the
    ReLU), BN's weight and bias and the gate's parameters, each None where
    ``needs`` (in that order) says it is not wanted."""
    plane = z.shape[2] * z.shape[3]
    weight, bias, running_mean, running_var = norm
    with torch.enable_grad():
        mean_l, var_l = _leaf(mean, True), _leaf(var, True)
        weight_l, bias_l = _leaf(weight, needs[2]), _leaf(bias, needs[3])
        params_l = [_leaf(t, need) for t, need in zip(params, needs[4:])]
        a, m, p, q, _ = _coefficients(
            shift, mean_l, var_l, plane, fold,
            (weight_l, bias_l, running_mean, running_var), gate, params_l,
            saved=reduced or None)
    coef = [None if t is None else t.detach() for t in (a, m, p, q)]
    s_w, s_uz, s_v, s_vz = kernels.gradient_sums(grad_y, z, y, shift, mean,
                                                 *coef, gate.shuffle)
    a_ = 1. if a is None else coef[0]
    pairs = [(m, s_w), (q, s_v), (a, s_uz.sum(0)), (p, s_vz * a_)]
    pairs = [(t, g) for t, g in pairs if t is not None and t.requires_grad]
    inputs = [mean_l, var_l] + [
        t for t in (weight_l, bias_l, *params_l)
        if t is not None and t.requires_grad]
    found = iter(torch.autograd.grad([t for t, _ in pairs], inputs,
                                     [g for _, g in pairs],
                                     allow_unused=True))
    d_mean, d_var = next(found), next(found)
    # z - shift - mean also enters the element-wise pass directly, through
    # x and the logit: sum(u) = sum(g s) + p sum(v)
    s_u = s_w if p is None else s_w + coef[2] * s_v
    d_mean = -s_u * a_ if d_mean is None else d_mean - s_u * a_
    alpha = d_mean / plane
    beta = (torch.zeros_like(alpha) if d_var is None else d_var *
            (2. / plane))
    write_dr = y is not None and needs[1]
    dz, dr = kernels.input_gradients(grad_y, z, y, shift, mean, *coef, alpha,
                                     beta, gate.shuffle, write_dr)
    wanted = [next(found) if t is not None and t.requires_grad else None
              for t in (weight_l, bias_l, *params_l)]
    return [dz, dr if write_dr else None] + wanted


class BlockEndFused(torch.autograd.Function):
    """``relu(gate(BN(z)) + identity)`` by a :class:`BlockEndKernels`."""

    @staticmethod
    def forward(ctx, kernels: BlockEndKernels, z: Tensor,
                identity: Optional[Tensor], fold: Optional[NormFold],
                gate: GateMeta, weight: Optional[Tensor],
                bias: Optional[Tensor], running_mean: Optional[Tensor],
                running_var: Optional[Tensor],
                num_batches_tracked: Optional[Tensor],
                *params: Tensor) -> Tensor:
        norm = (weight, bias, running_mean, running_var)
        y, shift, mean, var, batch = forward(kernels, z, identity, fold,
                                             norm, gate, params)
        if fold is not None and fold.update:
            update_running_stats(fold, shift, batch, running_mean,
                                 running_var, num_batches_tracked)
        reduced = () if batch is None else batch[3]
        running = fold is not None and not fold.batch_stats
        ctx.save_for_backward(z, y if identity is not None else None, shift,
                              mean, var, weight, bias,
                              running_mean if running else None,
                              running_var if running else None, *reduced,
                              *params)
        ctx.meta = (kernels, fold, gate, len(reduced))
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError(
                'mmsa block end (fused kernels): double backward '
                '(create_graph=True) is not supported; run this attention '
                "with impl='reference' (or MMSA_IMPL=reference) to "
                'differentiate its gradients')
        kernels, fold, gate, n_reduced = ctx.meta
        saved = ctx.saved_tensors
        z, y, shift, mean, var, weight, bias, rm, rv = saved[:9]
        need = ctx.needs_input_grad
        grads = backward(kernels, grad_y, z, y, shift, mean, var, fold,
                         (weight, bias, rm, rv), gate, saved[9 + n_reduced:],
                         saved[9:9 + n_reduced],
                         (need[1], need[2], need[5], need[6], *need[10:]))
        return (None, *grads[:2], None, None, *grads[2:4], None, None, None,
                *grads[4:])


def block_end_fused(kernels: BlockEndKernels, z: Tensor,
                    identity: Optional[Tensor], fold: Optional[NormFold],
                    norm: Optional[torch.nn.Module],
                    gate: PlaneGate) -> Tensor:
    """``relu(gate(BN(z)) + identity)`` (without an identity: no add, no
    ReLU; without a fold: no norm) by ``kernels``."""
    meta = GateMeta(gate.function, gate.eps, gate.shuffle, gate.uses_var)
    if fold is None:
        norm_tensors = (None, ) * 5
    else:
        norm_tensors = (norm.weight, norm.bias, norm.running_mean,
                        norm.running_var, norm.num_batches_tracked)
    return BlockEndFused.apply(kernels, z, identity, fold, meta,
                               *norm_tensors, *gate.params)
