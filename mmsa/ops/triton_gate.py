"""The gate epilogue in Triton: ``relu(x * gc * gs + identity)`` for CUDA.

Every gating attention ends by multiplying its input by a gate: a channel
gate ``gc`` of shape (N, C) (SE, ECA, CBAM's first), a spatial gate ``gs``
of shape (N, G, H*W) shared by the C/G channels of each group (SGE with G
groups, CBAM's second with one), or both. At the end of a ResNet block the
product is added to the identity and goes through the ReLU. One
element-wise pass does all of it; the backward is one pass that writes the
input's and the identity's gradients and the gates' gradients as partial
sums (over p for ``gc``, over the channels of a group for ``gs``), which a
small sum finishes. Saved: the input, the gates and, with the ReLU, the
output (for its mask; the next layer holds it anyway).
"""
from typing import Optional

import torch
import triton
import triton.language as tl

from . import triton_support
from .triton_support import (folded, nc_p_strides, needs_int64, new_like,
                             on_device, tile)


@triton.jit
def _gate_forward_kernel(X, GC, GS, R, Y, C, P, G, sxn, sxc, sxp, syn, syc,
                         syp, srn, src, srp, HAS_GC: tl.constexpr,
                         HAS_GS: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
                         BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
                         WIDE: tl.constexpr):
    """One tile, on one grid axis (the others stop at 65,535), p-blocks
    fastest."""
    pid = tl.program_id(0)
    n_pb = tl.cdiv(P, BLOCK_P)
    n_cb = tl.cdiv(C, BLOCK_C)
    rest = pid // n_pb
    n = rest // n_cb
    cs = (rest % n_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    ps = (pid % n_pb) * BLOCK_P + tl.arange(0, BLOCK_P)
    cmask = cs < C
    mask = cmask[:, None] & (ps < P)[None, :]
    if WIDE:
        n = n.to(tl.int64)
        cs = cs.to(tl.int64)
        ps = ps.to(tl.int64)
    y = tl.load(X + n * sxn + cs[:, None] * sxc + ps[None, :] * sxp,
                mask=mask, other=0.).to(tl.float32)
    if HAS_GC:
        gc = tl.load(GC + n * C + cs, mask=cmask, other=0.).to(tl.float32)
        y = y * gc[:, None]
    if HAS_GS:
        grp = cs // (C // G)
        gs = tl.load(GS + (n * G + grp[:, None]) * P + ps[None, :], mask=mask,
                     other=0.).to(tl.float32)
        y = y * gs
    if HAS_RESIDUAL:
        r = tl.load(R + n * srn + cs[:, None] * src + ps[None, :] * srp,
                    mask=mask, other=0.).to(tl.float32)
        y = tl.maximum(y + r, 0.)
    tl.store(Y + n * syn + cs[:, None] * syc + ps[None, :] * syp,
             y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _gate_backward_kernel(X, Y, GY, GC, GS, DX, DR, PGC, PGS, C, P, G,
                          cchunk, csplits, sxn, sxc, sxp, syn, syc, syp, sgn,
                          sgc, sgp, sdn, sdc, sdp, srn, src, srp,
                          HAS_GC: tl.constexpr, HAS_GS: tl.constexpr,
                          HAS_RELU: tl.constexpr, WRITE_DR: tl.constexpr,
                          BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
                          WIDE: tl.constexpr):
    """One p-block of one channel chunk of one group: dx and d(identity)
    element-wise; gc's gradient summed over the block (one partial per
    p-block), gs's over the chunk's channels (one partial per chunk)."""
    n_pb = tl.cdiv(P, BLOCK_P)
    pid = tl.program_id(0) // n_pb  # (n, group, chunk)
    pid_p = tl.program_id(0) % n_pb
    split = pid % csplits
    grp = (pid // csplits) % G
    n = pid // (csplits * G)
    cpg = C // G
    c_lo = grp * cpg + split * cchunk
    c_hi = tl.minimum(c_lo + cchunk, (grp + 1) * cpg)
    ps = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = ps < P
    if WIDE:
        n = n.to(tl.int64)
        ps = ps.to(tl.int64)
    if HAS_GS:
        gs = tl.load(GS + (n * G + grp) * P + ps, mask=pmask,
                     other=0.).to(tl.float32)
    else:
        gs = tl.full([BLOCK_P], 1., tl.float32)
    acc_gs = tl.zeros([BLOCK_P], dtype=tl.float32)
    for c0 in range(c_lo, c_hi, BLOCK_C):
        cs = c0 + tl.arange(0, BLOCK_C)
        cmask = cs < c_hi
        if WIDE:
            cs = cs.to(tl.int64)
        mask = cmask[:, None] & pmask[None, :]
        x = tl.load(X + n * sxn + cs[:, None] * sxc + ps[None, :] * sxp,
                    mask=mask, other=0.).to(tl.float32)
        g = tl.load(GY + n * sgn + cs[:, None] * sgc + ps[None, :] * sgp,
                    mask=mask, other=0.).to(tl.float32)
        if HAS_RELU:
            y = tl.load(Y + n * syn + cs[:, None] * syc + ps[None, :] * syp,
                        mask=mask, other=0.)
            g = tl.where(y > 0, g, 0.)
        if WRITE_DR:
            tl.store(DR + n * srn + cs[:, None] * src + ps[None, :] * srp,
                     g.to(DR.dtype.element_ty), mask=mask)
        if HAS_GC:
            gc = tl.load(GC + n * C + cs, mask=cmask, other=0.).to(tl.float32)
        else:
            gc = tl.full([BLOCK_C], 1., tl.float32)
        dx = g * gc[:, None] * gs[None, :]
        tl.store(DX + n * sdn + cs[:, None] * sdc + ps[None, :] * sdp,
                 dx.to(DX.dtype.element_ty), mask=mask)
        gx = g * x
        if HAS_GC:
            tl.store(PGC + (n * C + cs) * n_pb + pid_p,
                     tl.sum(gx * gs[None, :], 1), mask=cmask)
        if HAS_GS:
            acc_gs += tl.sum(gx * gc[:, None], 0)
    if HAS_GS:
        tl.store(PGS + ((n * G + grp) * csplits + split) * P + ps, acc_gs,
                 mask=pmask)


def _plan(x: torch.Tensor, channel_stride: int, groups: int) -> tuple:
    """(block_c, block_p, chunk, splits): p-blocks across the grid, the
    channels of each group cut into ``splits`` chunks of ``chunk`` where
    samples x groups x p-blocks are too few to fill the device."""
    n, c, h, w = x.shape
    p, cpg = h * w, c // groups
    block_c, block_p = tile(cpg, p, channel_stride == 1 and c > 1, max_p=256)
    programs = n * groups * triton.cdiv(p, block_p)
    splits = max(1, min(triton.cdiv(triton_support.programs_wanted(x.device),
                                    programs),
                        triton.cdiv(cpg, block_c)))
    chunk = triton.cdiv(triton.cdiv(cpg, splits), block_c) * block_c
    return block_c, block_p, chunk, triton.cdiv(cpg, chunk)


class GateTriton(torch.autograd.Function):
    """``relu(x * gc * gs + identity)`` (each factor optional) by Triton."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, gc: Optional[torch.Tensor],
                gs: Optional[torch.Tensor],
                residual: Optional[torch.Tensor]) -> torch.Tensor:
        if nc_p_strides(x) is None:
            x = x.contiguous()
        n, c, h, w = x.shape
        p = h * w
        sx = nc_p_strides(x)
        groups = 1 if gs is None else gs.shape[1]
        gc_ = None if gc is None else gc.reshape(n, c).contiguous()
        gs_ = None if gs is None else gs.reshape(n, groups, p).contiguous()
        if residual is not None:
            residual, sr = folded(residual, x)
        else:
            sr = (0, 0, 0)
        y = new_like(x)
        sy = nc_p_strides(y)
        block_c, block_p = tile(c, p, sx[1] == 1 and c > 1, max_p=1024)
        grid = (n * triton.cdiv(c, block_c) * triton.cdiv(p, block_p), )
        _gate_forward_kernel[grid](
            x, x if gc_ is None else gc_, x if gs_ is None else gs_,
            x if residual is None else residual, y, c, p, groups, *sx, *sy,
            *sr, HAS_GC=gc_ is not None, HAS_GS=gs_ is not None,
            HAS_RESIDUAL=residual is not None, BLOCK_C=block_c,
            BLOCK_P=block_p, WIDE=needs_int64(x, y, residual, gs_))
        relu = residual is not None
        ctx.save_for_backward(x, y if relu else None, gc_, gs_)
        ctx.meta = (relu, groups, None if gc is None else gc.shape,
                    None if gs is None else gs.shape)
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError(
                'mmsa gate epilogue (Triton kernel): double backward '
                '(create_graph=True) is not supported; run this attention '
                "with impl='reference' (or MMSA_IMPL=reference) to "
                'differentiate its gradients')
        x, y, gc, gs = ctx.saved_tensors
        relu, groups, gc_shape, gs_shape = ctx.meta
        n, c, h, w = x.shape
        p = h * w
        grad_y, sg = folded(grad_y, x)
        sx = nc_p_strides(x)
        block_c, block_p, chunk, splits = _plan(x, sx[1], groups)
        n_pb = triton.cdiv(p, block_p)
        f32 = dict(device=x.device, dtype=torch.float32)
        want_gc = gc is not None and ctx.needs_input_grad[1]
        want_gs = gs is not None and ctx.needs_input_grad[2]
        part_gc = torch.empty(n * c * n_pb, **f32) if gc is not None else x
        part_gs = (torch.empty(n * groups * splits * p, **f32)
                   if gs is not None else x)
        dx = new_like(x)
        write_dr = relu and ctx.needs_input_grad[3]
        dr = new_like(y) if write_dr else None
        _gate_backward_kernel[(n * groups * splits * n_pb, )](
            x, x if y is None else y, grad_y, x if gc is None else gc,
            x if gs is None else gs, dx, dx if dr is None else dr, part_gc,
            part_gs, c, p, groups, chunk, splits, *sx,
            *(nc_p_strides(y) if relu else (0, 0, 0)), *sg,
            *nc_p_strides(dx),
            *(nc_p_strides(dr) if dr is not None else (0, 0, 0)),
            HAS_GC=gc is not None, HAS_GS=gs is not None, HAS_RELU=relu,
            WRITE_DR=write_dr, BLOCK_C=block_c, BLOCK_P=block_p,
            WIDE=needs_int64(x, y, grad_y, dx, dr, part_gs))
        d_gc = (part_gc.view(n * c, n_pb).sum(1).view(gc_shape).to(gc.dtype)
                if want_gc else None)
        d_gs = None
        if want_gs:
            d_gs = part_gs.view(n, groups, splits, p)
            d_gs = d_gs[:, :, 0] if splits == 1 else d_gs.sum(2)
            d_gs = d_gs.reshape(gs_shape).to(gs.dtype)
        return dx, d_gc, d_gs, dr


def gate_triton(x: torch.Tensor, channel_gate: Optional[torch.Tensor],
                spatial_gate: Optional[torch.Tensor],
                identity: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`~mmsa.ops.gate_reference` by the Triton kernels; callers
    check :func:`~mmsa.ops.triton_support.triton_unsupported` first."""
    n, c, h, w = x.shape
    if channel_gate is not None and channel_gate.numel() != n * c:
        raise ValueError(f'gate_triton: the channel gate has shape '
                         f'{tuple(channel_gate.shape)}; an input of shape '
                         f'{tuple(x.shape)} takes N x C = {n} x {c}')
    if spatial_gate is not None and (
            spatial_gate.dim() != 4 or spatial_gate.shape[0] != n
            or c % spatial_gate.shape[1] or spatial_gate.shape[2:] != (h, w)):
        raise ValueError(f'gate_triton: the spatial gate has shape '
                         f'{tuple(spatial_gate.shape)}; an input of shape '
                         f'{tuple(x.shape)} takes N x G x H x W with G '
                         f'dividing C = {c}')
    with on_device(x):
        return GateTriton.apply(x, channel_gate, spatial_gate, identity)
