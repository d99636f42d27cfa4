"""The block end's four passes as Triton kernels (CUDA, and CPU tensors
under ``TRITON_INTERPRET=1``): the moments of ``z``, the element-wise
``y = relu(x * s + identity)``, the backward's per-plane sums and ``dz``
(what each computes: :class:`~mmsa.ops.block_end_fused.BlockEndKernels`;
the host around them: ``block_end_fused.py``).

Tensors are read in place whatever their layout where H and W fold into
one axis (contiguous, channels_last), computed in float32 and stored in
their own dtype (float32/float16/bfloat16); a plane's moments are merged
Chan's way where it is split over programs. No atomics: two identical
calls give identical bits. Offsets are int32 unless a tensor's address
span needs int64.
"""
import functools
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from .block_end_fused import BlockEndKernels, block_end_fused
from .block_end_reference import PlaneGate
from .norm_fold import NormFold
from .triton_support import (folded, nc_p_strides, needs_int64,
                             new_like, on_device, plan_tiles, programs_wanted,
                             tile)

__all__ = ['block_end_triton', 'KERNELS']

Tensor = torch.Tensor


@triton.jit
def _element_tile(C, P, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
                  WIDE: tl.constexpr):
    """(n, cs, ps, cmask, pmask) of this program's tile: one grid axis (the
    others stop at 65,535), p-blocks fastest."""
    pid = tl.program_id(0)
    n_pb = tl.cdiv(P, BLOCK_P)
    n_cb = tl.cdiv(C, BLOCK_C)
    rest = pid // n_pb
    n = rest // n_cb
    cs = (rest % n_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    ps = (pid % n_pb) * BLOCK_P + tl.arange(0, BLOCK_P)
    cmask = cs < C
    pmask = ps < P
    if WIDE:
        n = n.to(tl.int64)
        cs = cs.to(tl.int64)
        ps = ps.to(tl.int64)
    return n, cs, ps, cmask, pmask


@triton.jit
def _out_channel(cs, C, SHUFFLE: tl.constexpr):
    """The output channel of input channel c: the channel shuffle with
    SHUFFLE groups, ``g * C/SHUFFLE + i -> i * SHUFFLE + g``."""
    if SHUFFLE == 1:
        return cs
    per = C // SHUFFLE
    return (cs % per) * SHUFFLE + cs // per


@triton.jit
def _plane(SHIFT, MEAN, A, M, PP, Q, n, cs, cmask, C,
           HAS_A: tl.constexpr, HAS_P: tl.constexpr):
    """Each plane's shift, mean about it, and coefficients a, m, p, q."""
    rows = n * C + cs
    shift = tl.load(SHIFT + cs, mask=cmask, other=0.)
    mean = tl.load(MEAN + rows, mask=cmask, other=0.)
    a = tl.load(A + cs, mask=cmask, other=0.) if HAS_A else shift * 0. + 1.
    m = tl.load(M + rows, mask=cmask, other=0.)
    p = tl.load(PP + rows, mask=cmask, other=0.) if HAS_P else shift * 0.
    q = tl.load(Q + rows, mask=cmask, other=0.)
    return shift, mean, a, m, p, q


@triton.jit
def _gate(z, shift, mean, a, m, p, q, HAS_P: tl.constexpr):
    """(z about the plane's mean, x = BN(z), the gate s) of one tile."""
    zc = (z - shift[:, None]) - mean[:, None]
    xc = a[:, None] * zc
    x = xc + m[:, None]
    if HAS_P:
        s = tl.sigmoid(p[:, None] * xc + q[:, None])
    else:
        s = tl.sigmoid(q)[:, None] + zc * 0.
    return zc, x, s


@triton.jit
def _masked_grad(GY, Y, n, oc, ps, mask, sgn, sgc, sgp, syn, syc, syp,
                 HAS_RELU: tl.constexpr):
    """The output gradient of a tile, zero where the ReLU was off."""
    g = tl.load(GY + n * sgn + oc[:, None] * sgc + ps[None, :] * sgp,
                mask=mask, other=0.).to(tl.float32)
    if HAS_RELU:
        y = tl.load(Y + n * syn + oc[:, None] * syc + ps[None, :] * syp,
                    mask=mask, other=0.)
        g = tl.where(y > 0, g, 0.)
    return g


@triton.jit
def _moments_kernel(Z, SHIFT, PMEAN, PM2, MEAN, VAR, C, P, szn, szc, szp,
                    chunk, splits, BLOCK_C: tl.constexpr,
                    BLOCK_P: tl.constexpr, FINAL: tl.constexpr,
                    WIDE: tl.constexpr):
    """Mean and M2 of chunk ``pid_s`` of each plane about its channel's
    shift, the channel's first value (in float32 a mean of 1e4 would
    otherwise cost 1e-3 of precision, which a std of 1 would see); with
    one chunk a plane (FINAL), the plane's mean and variance."""
    pid = tl.program_id(0)
    pid_s = tl.program_id(1)
    n_cb = tl.cdiv(C, BLOCK_C)
    n = pid // n_cb
    cs = (pid % n_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < C
    rows = n * C + cs
    if WIDE:
        n = n.to(tl.int64)
        cs = cs.to(tl.int64)
    shift = tl.load(Z + cs * szc, mask=cmask, other=0.).to(tl.float32)
    if pid < n_cb:  # sample 0
        if pid_s == 0:
            tl.store(SHIFT + cs, shift, mask=cmask)
    p_lo = pid_s * chunk
    p_hi = tl.minimum(p_lo + chunk, P)
    base = Z + n * szn + cs[:, None] * szc
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    for p0 in range(p_lo, p_hi, BLOCK_P):
        ps = p0 + tl.arange(0, BLOCK_P)
        if WIDE:
            ps = ps.to(tl.int64)
        mask = cmask[:, None] & (ps < p_hi)[None, :]
        z = tl.load(base + ps[None, :] * szp, mask=mask,
                    other=0.).to(tl.float32)
        z = tl.where(mask, z - shift[:, None], 0.)
        # Chan's merge of this tile's (count, mean, M2) into the running ones
        seen = (p0 - p_lo).to(tl.float32)
        cnt = tl.minimum(p_hi - p0, BLOCK_P).to(tl.float32)
        t_mean = tl.sum(z, 1) / cnt
        dev = tl.where(mask, z - t_mean[:, None], 0.)
        delta = t_mean - mean
        total = seen + cnt
        mean = mean + delta * (cnt / total)
        m2 = m2 + tl.sum(dev * dev, 1) + delta * delta * (seen * cnt / total)
    if FINAL:
        tl.store(MEAN + rows, mean, mask=cmask)
        tl.store(VAR + rows, m2 / P, mask=cmask)
    else:
        tl.store(PMEAN + rows * splits + pid_s, mean, mask=cmask)
        tl.store(PM2 + rows * splits + pid_s, m2, mask=cmask)


@triton.jit
def _merge_moments_kernel(PMEAN, PM2, MEAN, VAR, rows, P, chunk, splits,
                          BLOCK_R: tl.constexpr, SPLITS_P2: tl.constexpr):
    """Each plane's mean and variance from its chunks' (Chan's formula)."""
    rs = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    ss = tl.arange(0, SPLITS_P2)
    smask = (rs < rows)[:, None] & (ss < splits)[None, :]
    idx = rs[:, None] * splits + ss[None, :]
    means = tl.load(PMEAN + idx, mask=smask, other=0.)
    m2s = tl.load(PM2 + idx, mask=smask, other=0.)
    cnt = tl.minimum(tl.maximum(P - ss * chunk, 0), chunk).to(tl.float32)
    mean = tl.sum(means * cnt[None, :], 1) / P
    dev = tl.where(smask, means - mean[:, None], 0.)
    m2 = tl.sum(m2s + dev * dev * cnt[None, :], 1)
    tl.store(MEAN + rs, mean, mask=rs < rows)
    tl.store(VAR + rs, m2 / P, mask=rs < rows)


@triton.jit
def _apply_kernel(Z, R, Y, SHIFT, MEAN, A, M, PP, Q, C, P, szn, szc, szp,
                  srn, src, srp, syn, syc, syp, SHUFFLE: tl.constexpr,
                  HAS_A: tl.constexpr, HAS_P: tl.constexpr,
                  HAS_RESIDUAL: tl.constexpr, BLOCK_C: tl.constexpr,
                  BLOCK_P: tl.constexpr, WIDE: tl.constexpr):
    """``y[n, shuffle(c)] = relu(x * s + identity)`` for one tile."""
    n, cs, ps, cmask, pmask = _element_tile(C, P, BLOCK_C, BLOCK_P, WIDE)
    mask = cmask[:, None] & pmask[None, :]
    shift, mean, a, m, p, q = _plane(SHIFT, MEAN, A, M, PP, Q, n, cs, cmask,
                                     C, HAS_A, HAS_P)
    z = tl.load(Z + n * szn + cs[:, None] * szc + ps[None, :] * szp,
                mask=mask, other=0.).to(tl.float32)
    zc, x, s = _gate(z, shift, mean, a, m, p, q, HAS_P)
    y = x * s
    oc = _out_channel(cs, C, SHUFFLE)
    if HAS_RESIDUAL:
        r = tl.load(R + n * srn + oc[:, None] * src + ps[None, :] * srp,
                    mask=mask, other=0.).to(tl.float32)
        y = tl.maximum(y + r, 0.)
    tl.store(Y + n * syn + oc[:, None] * syc + ps[None, :] * syp,
             y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _grads(g, x, s, p, HAS_P: tl.constexpr):
    """(u, v): the gradients of the gated output's input x and of the
    gate's logit."""
    v = g * x * s * (1. - s)
    if HAS_P:
        u = g * s + p[:, None] * v
    else:
        u = g * s
    return u, v


@triton.jit
def _sums_kernel(Z, Y, GY, SHIFT, MEAN, A, M, PP, Q, SUMS, C, P, nc, szn, szc,
                 szp, syn, syc, syp, sgn, sgc, sgp, chunk, splits,
                 SHUFFLE: tl.constexpr, HAS_A: tl.constexpr,
                 HAS_P: tl.constexpr, HAS_RELU: tl.constexpr,
                 BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
                 WIDE: tl.constexpr):
    """Chunk ``pid_s``'s sums of g * s, u * zc, v and v * zc per plane."""
    pid = tl.program_id(0)
    pid_s = tl.program_id(1)
    n_cb = tl.cdiv(C, BLOCK_C)
    n = pid // n_cb
    cs = (pid % n_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < C
    out = (n * C + cs) * splits + pid_s
    if WIDE:
        n = n.to(tl.int64)
        cs = cs.to(tl.int64)
    shift, mean, a, m, p, q = _plane(SHIFT, MEAN, A, M, PP, Q, n, cs, cmask,
                                     C, HAS_A, HAS_P)
    oc = _out_channel(cs, C, SHUFFLE)
    p_lo = pid_s * chunk
    p_hi = tl.minimum(p_lo + chunk, P)
    acc_w = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    acc_uz = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    acc_v = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    acc_vz = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    for p0 in range(p_lo, p_hi, BLOCK_P):
        ps = p0 + tl.arange(0, BLOCK_P)
        if WIDE:
            ps = ps.to(tl.int64)
        mask = cmask[:, None] & (ps < p_hi)[None, :]
        z = tl.load(Z + n * szn + cs[:, None] * szc + ps[None, :] * szp,
                    mask=mask, other=0.).to(tl.float32)
        g = _masked_grad(GY, Y, n, oc, ps, mask, sgn, sgc, sgp, syn, syc,
                         syp, HAS_RELU)
        zc, x, s = _gate(z, shift, mean, a, m, p, q, HAS_P)
        zc = tl.where(mask, zc, 0.)
        u, v = _grads(g, x, s, p, HAS_P)
        acc_w += g * s
        acc_uz += u * zc
        acc_v += v
        acc_vz += v * zc
    tl.store(SUMS + out, tl.sum(acc_w, 1), mask=cmask)
    tl.store(SUMS + nc * splits + out, tl.sum(acc_uz, 1), mask=cmask)
    tl.store(SUMS + 2 * nc * splits + out, tl.sum(acc_v, 1), mask=cmask)
    tl.store(SUMS + 3 * nc * splits + out, tl.sum(acc_vz, 1), mask=cmask)


@triton.jit
def _dz_kernel(Z, Y, GY, DZ, DR, SHIFT, MEAN, A, M, PP, Q, ALPHA, BETA, C, P,
               szn, szc, szp, syn, syc, syp, sgn, sgc, sgp, sdn, sdc, sdp,
               srn, src, srp, SHUFFLE: tl.constexpr, HAS_A: tl.constexpr,
               HAS_P: tl.constexpr, HAS_RELU: tl.constexpr,
               WRITE_DR: tl.constexpr, BLOCK_C: tl.constexpr,
               BLOCK_P: tl.constexpr, WIDE: tl.constexpr):
    """``dz = a * u + alpha + beta * zc`` (alpha, beta: what the plane's
    mean and variance owe to the N x C functions) and the identity's
    gradient, the masked output gradient, for one tile."""
    n, cs, ps, cmask, pmask = _element_tile(C, P, BLOCK_C, BLOCK_P, WIDE)
    mask = cmask[:, None] & pmask[None, :]
    shift, mean, a, m, p, q = _plane(SHIFT, MEAN, A, M, PP, Q, n, cs, cmask,
                                     C, HAS_A, HAS_P)
    rows = n * C + cs
    alpha = tl.load(ALPHA + rows, mask=cmask, other=0.)
    beta = tl.load(BETA + rows, mask=cmask, other=0.)
    oc = _out_channel(cs, C, SHUFFLE)
    z = tl.load(Z + n * szn + cs[:, None] * szc + ps[None, :] * szp,
                mask=mask, other=0.).to(tl.float32)
    g = _masked_grad(GY, Y, n, oc, ps, mask, sgn, sgc, sgp, syn, syc, syp,
                     HAS_RELU)
    zc, x, s = _gate(z, shift, mean, a, m, p, q, HAS_P)
    u, v = _grads(g, x, s, p, HAS_P)
    dz = a[:, None] * u + alpha[:, None] + beta[:, None] * zc
    tl.store(DZ + n * sdn + cs[:, None] * sdc + ps[None, :] * sdp,
             dz.to(DZ.dtype.element_ty), mask=mask)
    if WRITE_DR:
        tl.store(DR + n * srn + oc[:, None] * src + ps[None, :] * srp,
                 g.to(DR.dtype.element_ty), mask=mask)


class _Plan:
    """Launch geometry for one shape and layout: the reductions over each
    plane (split in chunks where planes are too few to fill the device)
    and the element-wise tiles."""

    def __init__(self, n: int, c: int, p: int, channel_stride: int,
                 device: torch.device) -> None:
        self.block_c, self.block_p, self.splits, self.chunk = plan_tiles(
            device, n, c, p, channel_stride)
        self.grid_reduce = (n * triton.cdiv(c, self.block_c), self.splits)
        self.tile_c, self.tile_p = tile(c, p, channel_stride == 1 and c > 1,
                                        max_p=1024)
        self.grid_tiles = (n * triton.cdiv(c, self.tile_c) *
                           triton.cdiv(p, self.tile_p), )


@functools.lru_cache(maxsize=4096)
def _cached_plan(n: int, c: int, p: int, channel_stride: int,
                 device: torch.device, programs: int) -> _Plan:
    return _Plan(n, c, p, channel_stride, device)


def _plan(z: Tensor, channel_stride: int) -> _Plan:
    """The plan of ``z``'s shape and layout, made once (a bounded cache:
    multi-scale training sees many shapes); keyed by the programs wanted
    too, which decide the splits."""
    n, c, h, w = z.shape
    return _cached_plan(n, c, h * w, channel_stride, z.device,
                        programs_wanted(z.device))


def _plane_args(shift, mean, a, m, p, q) -> list:
    """The kernels' SHIFT, MEAN, A, M, PP, Q (an unused one: any tensor)."""
    return [shift, mean, mean if a is None else a.contiguous(),
            m.contiguous(), m if p is None else p.contiguous(),
            q.contiguous()]


def moments(z: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(shift, mean, var): each channel's first value (C,), and each
    plane's mean about it and variance (N x C), float32."""
    z, sz = folded(z, z)
    n, c, h, w = z.shape
    p = h * w
    plan = _plan(z, sz[1])
    f32 = dict(device=z.device, dtype=torch.float32)
    shift, mean, var = (torch.empty(size, **f32)
                        for size in (c, n * c, n * c))
    final = plan.splits == 1
    part = (mean, var) if final else torch.empty(2, n * c * plan.splits,
                                                 **f32)
    _moments_kernel[plan.grid_reduce](
        z, shift, part[0], part[1], mean, var, c, p, *sz, plan.chunk,
        plan.splits, BLOCK_C=plan.block_c, BLOCK_P=plan.block_p,
        FINAL=final, WIDE=needs_int64(z))
    if not final:
        rows = n * c
        block_r = max(1, min(triton.next_power_of_2(rows),
                             2048 // triton.next_power_of_2(plan.splits)))
        _merge_moments_kernel[(triton.cdiv(rows, block_r), )](
            part[0], part[1], mean, var, rows, p, plan.chunk, plan.splits,
            BLOCK_R=block_r, SPLITS_P2=triton.next_power_of_2(plan.splits))
    return shift, mean.view(n, c), var.view(n, c)


def apply(z: Tensor, identity: Optional[Tensor], shift: Tensor,
          mean: Tensor, a: Optional[Tensor], m: Tensor, p: Optional[Tensor],
          q: Tensor, shuffle: int) -> Tensor:
    """``y = relu(x * sigmoid(p (x - m) + q) + identity)`` (no add, no ReLU
    without an identity) with ``x = a (z - shift - mean) + m``, the output
    channels shuffled in ``shuffle`` groups."""
    z, sz = folded(z, z)
    n, c, h, w = z.shape
    plan = _plan(z, sz[1])
    y = new_like(z)
    sr = (0, 0, 0)
    if identity is not None:
        identity, sr = folded(identity, z)
    _apply_kernel[plan.grid_tiles](
        z, z if identity is None else identity, y,
        *_plane_args(shift, mean, a, m, p, q), c, h * w, *sz, *sr,
        *nc_p_strides(y), SHUFFLE=shuffle, HAS_A=a is not None,
        HAS_P=p is not None, HAS_RESIDUAL=identity is not None,
        BLOCK_C=plan.tile_c, BLOCK_P=plan.tile_p,
        WIDE=needs_int64(z, y, identity))
    return y


def gradient_sums(grad_y: Tensor, z: Tensor, y: Optional[Tensor],
                  shift: Tensor, mean: Tensor, a: Optional[Tensor],
                  m: Tensor, p: Optional[Tensor], q: Tensor,
                  shuffle: int) -> Tensor:
    """(4, N, C): each plane's sums of g s, u zc, v and v zc, with g the
    output gradient (masked by the ReLU where the output ``y`` is given),
    s the gate, zc = z - shift - mean, u and v the gradients of the gate's
    input x - m and of its logit: what BN's a and m and the gate's p and q
    owe."""
    z, sz = folded(z, z)
    n, c, h, w = z.shape
    plan = _plan(z, sz[1])
    grad_y, sg = folded(grad_y, z)
    sums = torch.empty(4, n * c, plan.splits, device=z.device,
                       dtype=torch.float32)
    _sums_kernel[plan.grid_reduce](
        z, z if y is None else y, grad_y,
        *_plane_args(shift, mean, a, m, p, q), sums, c, h * w, n * c, *sz,
        *(nc_p_strides(y) if y is not None else (0, 0, 0)), *sg, plan.chunk,
        plan.splits, SHUFFLE=shuffle, HAS_A=a is not None,
        HAS_P=p is not None, HAS_RELU=y is not None, BLOCK_C=plan.block_c,
        BLOCK_P=plan.block_p, WIDE=needs_int64(z, grad_y, y))
    return (sums[:, :, 0] if plan.splits == 1 else sums.sum(2)).view(
        4, n, c)


def input_gradients(grad_y: Tensor, z: Tensor, y: Optional[Tensor],
                    shift: Tensor, mean: Tensor, a: Optional[Tensor],
                    m: Tensor, p: Optional[Tensor], q: Tensor,
                    alpha: Tensor, beta: Tensor, shuffle: int,
                    write_identity: bool) -> List[Tensor]:
    """``[dz, d_identity]``: ``dz = a u + alpha + beta (z - shift - mean)``
    (alpha, beta: N x C, what the plane's mean and variance owe), and with
    ``write_identity`` the identity's gradient, the masked output gradient
    (else an empty tensor)."""
    z, sz = folded(z, z)
    n, c, h, w = z.shape
    plan = _plan(z, sz[1])
    grad_y, sg = folded(grad_y, z)
    dz = new_like(z)
    dr = new_like(grad_y) if write_identity else dz.new_empty(0)
    _dz_kernel[plan.grid_tiles](
        z, z if y is None else y, grad_y, dz, dr,
        *_plane_args(shift, mean, a, m, p, q), alpha.contiguous(),
        beta.contiguous(), c, h * w, *sz,
        *(nc_p_strides(y) if y is not None else (0, 0, 0)), *sg,
        *nc_p_strides(dz),
        *(nc_p_strides(dr) if write_identity else (0, 0, 0)),
        SHUFFLE=shuffle, HAS_A=a is not None, HAS_P=p is not None,
        HAS_RELU=y is not None, WRITE_DR=write_identity,
        BLOCK_C=plan.tile_c, BLOCK_P=plan.tile_p,
        WIDE=needs_int64(z, grad_y, y, dz, dr))
    return [dz, dr]


#: The passes, for the fused host (``block_end_fused.py``).
KERNELS = BlockEndKernels(moments, apply, gradient_sums, input_gradients)


def block_end_triton(z: Tensor, identity: Optional[Tensor],
                     fold: Optional[NormFold], norm: Optional[torch.nn.Module],
                     gate: PlaneGate) -> Tensor:
    """``relu(gate(BN(z)) + identity)`` (without an identity: no add, no
    ReLU; without a fold: no norm) by the Triton kernels, in ``z``'s dtype
    and memory format. Callers check
    :func:`~mmsa.ops.triton_support.triton_unsupported` first."""
    with on_device(z):
        return block_end_fused(KERNELS, z, identity, fold, norm, gate)
