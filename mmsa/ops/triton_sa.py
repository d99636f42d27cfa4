"""Shuffle Attention in Triton: forward and backward for CUDA.

SA's two halves are ``y = x * sigmoid(A * (x - mean) + B)`` per (sample,
channel) plane (``mmsa/ops/shuffle_attention.py`` has the algebra), and the
channel shuffle only moves input channel ``c`` to output channel
``2c`` (first half) or ``2(c - C/2) + 1`` (second half). So:

* forward: one statistics pass (Welford per tile, merged across the chunks
  a plane is split into) and one element-wise pass that computes the gate,
  adds the residual and applies the ReLU where asked, and writes the
  shuffled output;
* backward: one pass for the two per-plane sums ``sum(d)`` and
  ``sum(d * (x - mean))`` (``d = dL/dz``), one pass writing the input
  gradient (and the residual's), and one small kernel reducing the plane
  sums to the six parameter gradients.

Saved for backward: the input, the output (only with the ReLU, for its
mask; the next layer holds it anyway) and two floats per plane. Tensors of
any dtype among float32/float16/bfloat16 are computed in float32 and stored
in their own dtype; contiguous and channels_last layouts are read in place.
"""
from typing import Optional

import torch
import triton
import triton.language as tl

from .triton_support import nc_p_strides, on_device, plan_tiles


@triton.jit
def _block_rows(pid, C, BLOCK_C: tl.constexpr):
    """(n, cs, cmask, rows): the sample and channels of program ``pid``'s
    block, their mask and their planes' indices n * C + c."""
    n_cb = tl.cdiv(C, BLOCK_C)
    n = pid // n_cb
    cs = (pid % n_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    return n, cs, cs < C, n * C + cs


@triton.jit
def _shuffled(cs, C):
    """The output channel of input channel c: the shuffle with 2 groups."""
    half = C // 2
    return tl.where(cs < half, 2 * cs, 2 * (cs - half) + 1)


@triton.jit
def _sa_stats_kernel(X, PMEAN, PM2, C, P, sxn, sxc, sxp, chunk, splits,
                     BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Mean and sum of squared deviations of chunk ``pid_s`` of each plane,
    about the plane's first value (its pivot: in float32 a mean of 1e4
    would otherwise carry an error of 1e-3, which a std of 1 would see)."""
    n, cs, cmask, rows = _block_rows(tl.program_id(0), C, BLOCK_C)
    pid_s = tl.program_id(1)
    p_lo = pid_s * chunk
    p_hi = tl.minimum(p_lo + chunk, P)
    pivot = tl.load(X + n * sxn + cs * sxc, mask=cmask,
                    other=0.).to(tl.float32)
    base = X + n * sxn + cs[:, None] * sxc
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    for p0 in range(p_lo, p_hi, BLOCK_P):
        ps = p0 + tl.arange(0, BLOCK_P)
        pmask = ps < p_hi
        mask = cmask[:, None] & pmask[None, :]
        x = tl.load(base + ps[None, :] * sxp, mask=mask,
                    other=0.).to(tl.float32)
        x = tl.where(mask, x - pivot[:, None], 0.)
        # Chan's merge of this tile's (count, mean, M2) into the running ones
        seen = (p0 - p_lo).to(tl.float32)
        cnt = tl.minimum(p_hi - p0, BLOCK_P).to(tl.float32)
        t_mean = tl.sum(x, 1) / cnt
        dev = tl.where(mask, x - t_mean[:, None], 0.)
        t_m2 = tl.sum(dev * dev, 1)
        delta = t_mean - mean
        total = seen + cnt
        mean = mean + delta * (cnt / total)
        m2 = m2 + t_m2 + delta * delta * (seen * cnt / total)
    out = rows * splits + pid_s
    tl.store(PMEAN + out, mean, mask=cmask)
    tl.store(PM2 + out, m2, mask=cmask)


@triton.jit
def _plane_coefficients(cs, cmask, C, K, CW, CB, SW, SB, GW, GB, mean, rstd):
    """(a, b, cw) with the gate ``sigmoid(a * (x - mean) + b)`` of each input
    channel ``cs``: channel half a = 0, b = cw * mean + cb; spatial half
    a = sw * gw * rstd, b = sw * gb + sb (GroupNorm about the mean). The
    caller takes ``x - mean`` as ``(x - pivot) - shifted mean``."""
    j = cs % (2 * K)
    i = j % K
    spatial = j >= K
    cw = tl.load(CW + i, mask=cmask, other=0.).to(tl.float32)
    cb = tl.load(CB + i, mask=cmask, other=0.).to(tl.float32)
    sw = tl.load(SW + i, mask=cmask, other=0.).to(tl.float32)
    sb = tl.load(SB + i, mask=cmask, other=0.).to(tl.float32)
    gw = tl.load(GW + i, mask=cmask, other=0.).to(tl.float32)
    gb = tl.load(GB + i, mask=cmask, other=0.).to(tl.float32)
    a = tl.where(spatial, sw * gw * rstd, 0.)
    b = tl.where(spatial, sw * gb + sb, cw * mean + cb)
    return a, b, cw


@triton.jit
def _merge_stats(PMEAN, PM2, rows, cmask, P, chunk, splits, eps,
                 SPLITS_P2: tl.constexpr):
    """Mean and 1 / std of each plane from its chunks' partial statistics."""
    ss = tl.arange(0, SPLITS_P2)
    smask = cmask[:, None] & (ss[None, :] < splits)
    idx = rows[:, None] * splits + ss[None, :]
    means = tl.load(PMEAN + idx, mask=smask, other=0.)
    m2s = tl.load(PM2 + idx, mask=smask, other=0.)
    cnt = tl.minimum(tl.maximum(P - ss * chunk, 0), chunk).to(tl.float32)
    mean = tl.sum(means * cnt[None, :], 1) / P
    dev = tl.where(smask, means - mean[:, None], 0.)
    m2 = tl.sum(m2s + dev * dev * cnt[None, :], 1)
    return mean, 1. / tl.sqrt(m2 / P + eps)


@triton.jit
def _saved_gate(PIVOT, SMEAN, RSTD, rows, cs, cmask, C, K, CW, CB, SW, SB,
                GW, GB):
    """The forward's per-plane statistics and the gate's (a, b, cw)."""
    pivot = tl.load(PIVOT + rows, mask=cmask, other=0.)
    smean = tl.load(SMEAN + rows, mask=cmask, other=0.)
    rstd = tl.load(RSTD + rows, mask=cmask, other=0.)
    a, b, cw = _plane_coefficients(cs, cmask, C, K, CW, CB, SW, SB, GW, GB,
                                   pivot + smean, rstd)
    return pivot, smean, rstd, a, b, cw


@triton.jit
def _logit_grad(X, GY, Y, n, cs, oc, ps, mask, pivot, smean, a, b, sxn, sxc,
                sxp, sgn, sgc, sgp, syn, syc, syp, HAS_RELU: tl.constexpr):
    """(x - mean, the gate s, the ReLU-masked output gradient g and the
    gradient of the gate's logit d = g x s (1 - s)) of one tile."""
    x = tl.load(X + n * sxn + cs[:, None] * sxc + ps[None, :] * sxp,
                mask=mask, other=0.).to(tl.float32)
    g = tl.load(GY + n * sgn + oc[:, None] * sgc + ps[None, :] * sgp,
                mask=mask, other=0.).to(tl.float32)
    if HAS_RELU:
        y = tl.load(Y + n * syn + oc[:, None] * syc + ps[None, :] * syp,
                    mask=mask, other=0.)
        g = tl.where(y > 0, g, 0.)
    xc = (x - pivot[:, None]) - smean[:, None]
    s = tl.sigmoid(a[:, None] * xc + b[:, None])
    return xc, s, g, g * x * s * (1. - s)


@triton.jit
def _sa_forward_kernel(X, R, Y, PMEAN, PM2, PIVOT, SMEAN, RSTD, CW, CB, SW,
                       SB, GW, GB, C, K, P, sxn, sxc, sxp, syn, syc, syp, srn,
                       src, srp, chunk, splits, eps,
                       HAS_RESIDUAL: tl.constexpr, BLOCK_C: tl.constexpr,
                       BLOCK_P: tl.constexpr,
                       SPLITS_P2: tl.constexpr):
    """``y[n, shuffle(c)] = x * sigmoid(a (x - mean) + b)`` (+ residual,
    ReLU) for one tile; the first tile of each plane stores its stats."""
    n, cs, cmask, rows = _block_rows(tl.program_id(0), C, BLOCK_C)
    pid_p = tl.program_id(1)
    smean, rstd = _merge_stats(PMEAN, PM2, rows, cmask, P, chunk, splits,
                               eps, SPLITS_P2)
    pivot = tl.load(X + n * sxn + cs * sxc, mask=cmask,
                    other=0.).to(tl.float32)
    if pid_p == 0:
        tl.store(PIVOT + rows, pivot, mask=cmask)
        tl.store(SMEAN + rows, smean, mask=cmask)
        tl.store(RSTD + rows, rstd, mask=cmask)
    a, b, _ = _plane_coefficients(cs, cmask, C, K, CW, CB, SW, SB, GW, GB,
                                  pivot + smean, rstd)
    oc = _shuffled(cs, C)
    ps = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    mask = cmask[:, None] & (ps < P)[None, :]
    x = tl.load(X + n * sxn + cs[:, None] * sxc + ps[None, :] * sxp,
                mask=mask, other=0.).to(tl.float32)
    xc = (x - pivot[:, None]) - smean[:, None]
    y = x * tl.sigmoid(a[:, None] * xc + b[:, None])
    if HAS_RESIDUAL:
        r = tl.load(R + n * srn + oc[:, None] * src + ps[None, :] * srp,
                    mask=mask, other=0.).to(tl.float32)
        y = tl.maximum(y + r, 0.)
    tl.store(Y + n * syn + oc[:, None] * syc + ps[None, :] * syp,
             y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _sa_backward_sums_kernel(X, Y, GY, PIVOT, SMEAN, RSTD, PSD, PSDX, CW, CB,
                             SW, SB, GW, GB, C, K, P, sxn, sxc, sxp, syn, syc,
                             syp, sgn, sgc, sgp, chunk, splits,
                             HAS_RELU: tl.constexpr, BLOCK_C: tl.constexpr,
                             BLOCK_P: tl.constexpr):
    """Chunk ``pid_s``'s ``sum(d)`` and ``sum(d * (x - mean))`` per plane,
    ``d = g * x * s * (1 - s)`` the gradient of the gate's logit."""
    n, cs, cmask, rows = _block_rows(tl.program_id(0), C, BLOCK_C)
    pid_s = tl.program_id(1)
    pivot, smean, rstd, a, b, cw = _saved_gate(PIVOT, SMEAN, RSTD, rows, cs,
                                               cmask, C, K, CW, CB, SW, SB,
                                               GW, GB)
    oc = _shuffled(cs, C)
    p_lo = pid_s * chunk
    p_hi = tl.minimum(p_lo + chunk, P)
    acc_d = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    acc_dx = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
    for p0 in range(p_lo, p_hi, BLOCK_P):
        ps = p0 + tl.arange(0, BLOCK_P)
        mask = cmask[:, None] & (ps < p_hi)[None, :]
        xc, s, g, d = _logit_grad(X, GY, Y, n, cs, oc, ps, mask, pivot,
                                  smean, a, b, sxn, sxc, sxp, sgn, sgc, sgp,
                                  syn, syc, syp, HAS_RELU)
        acc_d += d
        acc_dx += d * xc
    out = rows * splits + pid_s
    tl.store(PSD + out, tl.sum(acc_d, 1), mask=cmask)
    tl.store(PSDX + out, tl.sum(acc_dx, 1), mask=cmask)


@triton.jit
def _sa_backward_dx_kernel(X, Y, GY, DX, DR, PIVOT, SMEAN, RSTD, PSD, PSDX,
                           SD, SDX, CW, CB, SW, SB, GW, GB, C, K, P, sxn, sxc,
                           sxp, syn, syc, syp, sgn, sgc, sgp, sdn, sdc, sdp,
                           srn, src, srp, splits, HAS_RELU: tl.constexpr,
                           WRITE_DR: tl.constexpr, BLOCK_C: tl.constexpr,
                           BLOCK_P: tl.constexpr, SPLITS_P2: tl.constexpr):
    """The input gradient of one tile, ``g s + a d + alpha (x - mean) +
    beta`` (the GroupNorm's or the mean's terms in alpha and beta), and the
    residual's, the ReLU-masked output gradient; the first tile of each
    plane stores the plane's two sums for the parameter gradients."""
    n, cs, cmask, rows = _block_rows(tl.program_id(0), C, BLOCK_C)
    pid_p = tl.program_id(1)
    ss = tl.arange(0, SPLITS_P2)
    smask = cmask[:, None] & (ss[None, :] < splits)
    idx = rows[:, None] * splits + ss[None, :]
    sum_d = tl.sum(tl.load(PSD + idx, mask=smask, other=0.), 1)
    sum_dx = tl.sum(tl.load(PSDX + idx, mask=smask, other=0.), 1)
    if pid_p == 0:
        tl.store(SD + rows, sum_d, mask=cmask)
        tl.store(SDX + rows, sum_dx, mask=cmask)
    pivot, smean, rstd, a, b, cw = _saved_gate(PIVOT, SMEAN, RSTD, rows, cs,
                                               cmask, C, K, CW, CB, SW, SB,
                                               GW, GB)
    spatial = (cs % (2 * K)) >= K
    alpha = tl.where(spatial, -a * rstd * rstd * sum_dx / P, 0.)
    beta = tl.where(spatial, -a * sum_d / P, cw * sum_d / P)
    oc = _shuffled(cs, C)
    ps = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    mask = cmask[:, None] & (ps < P)[None, :]
    xc, s, g, d = _logit_grad(X, GY, Y, n, cs, oc, ps, mask, pivot, smean, a,
                              b, sxn, sxc, sxp, sgn, sgc, sgp, syn, syc, syp,
                              HAS_RELU)
    dx = g * s + a[:, None] * d + alpha[:, None] * xc + beta[:, None]
    tl.store(DX + n * sdn + cs[:, None] * sdc + ps[None, :] * sdp,
             dx.to(DX.dtype.element_ty), mask=mask)
    if WRITE_DR:
        tl.store(DR + n * srn + oc[:, None] * src + ps[None, :] * srp,
                 g.to(DR.dtype.element_ty), mask=mask)


@triton.jit
def _sa_param_grads_kernel(SD, SDX, PIVOT, SMEAN, RSTD, SW, GW, GB, DCW, DCB,
                           DSW, DSB, DGW, DGB, K, planes,
                           BLOCK_G: tl.constexpr, BLOCK_K: tl.constexpr):
    """The six (k,) parameter gradients from the per-plane sums, summed
    over samples and groups (``planes`` = N * groups of 2k planes)."""
    ks = tl.arange(0, BLOCK_K)
    kmask = ks < K
    acc_cw = tl.zeros([BLOCK_G, BLOCK_K], dtype=tl.float32)
    acc_cb = tl.zeros([BLOCK_G, BLOCK_K], dtype=tl.float32)
    acc_sd = tl.zeros([BLOCK_G, BLOCK_K], dtype=tl.float32)
    acc_sx = tl.zeros([BLOCK_G, BLOCK_K], dtype=tl.float32)
    for g0 in range(0, planes, BLOCK_G):
        gs = g0 + tl.arange(0, BLOCK_G)
        mask = (gs < planes)[:, None] & kmask[None, :]
        chan = gs[:, None] * (2 * K) + ks[None, :]  # channel half
        spat = chan + K  # spatial half
        sd = tl.load(SD + chan, mask=mask, other=0.)
        mean = (tl.load(PIVOT + chan, mask=mask, other=0.) +
                tl.load(SMEAN + chan, mask=mask, other=0.))
        acc_cw += sd * mean
        acc_cb += sd
        acc_sd += tl.load(SD + spat, mask=mask, other=0.)
        acc_sx += (tl.load(SDX + spat, mask=mask, other=0.) *
                   tl.load(RSTD + spat, mask=mask, other=0.))
    sum_sd = tl.sum(acc_sd, 0)
    sum_sx = tl.sum(acc_sx, 0)  # sum of d * (x - mean) * rstd
    sw = tl.load(SW + ks, mask=kmask, other=0.).to(tl.float32)
    gw = tl.load(GW + ks, mask=kmask, other=0.).to(tl.float32)
    gb = tl.load(GB + ks, mask=kmask, other=0.).to(tl.float32)
    tl.store(DCW + ks, tl.sum(acc_cw, 0), mask=kmask)
    tl.store(DCB + ks, tl.sum(acc_cb, 0), mask=kmask)
    tl.store(DSW + ks, gw * sum_sx + gb * sum_sd, mask=kmask)
    tl.store(DSB + ks, sum_sd, mask=kmask)
    tl.store(DGW + ks, sw * sum_sx, mask=kmask)
    tl.store(DGB + ks, sw * sum_sd, mask=kmask)


def _strides(t: torch.Tensor, like: torch.Tensor) -> tuple:
    """``t``'s (n, c, p) strides; a layout that does not fold H and W is
    copied into ``like``'s memory format first (returned with them)."""
    strides = nc_p_strides(t)
    if strides is None:
        fmt = (torch.channels_last
               if like.is_contiguous(memory_format=torch.channels_last)
               and not like.is_contiguous() else torch.contiguous_format)
        t = t.contiguous(memory_format=fmt)
        strides = nc_p_strides(t)
    return t, strides


class _Plan:
    """Tile sizes and the split of each plane for one input shape."""

    __slots__ = ('grid_stats', 'grid_tiles', 'block_c', 'block_p', 'chunk',
                 'splits', 'splits_p2')

    def __init__(self, x: torch.Tensor, channel_stride: int) -> None:
        n, c, h, w = x.shape
        p = h * w
        self.block_c, self.block_p, self.splits, self.chunk = plan_tiles(
            x.device, n, c, p, channel_stride)
        n_cb = triton.cdiv(c, self.block_c)
        self.grid_stats = (n * n_cb, self.splits)
        self.grid_tiles = (n * n_cb, triton.cdiv(p, self.block_p))
        self.splits_p2 = triton.next_power_of_2(self.splits)


def _param(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_contiguous() else t.contiguous()


class SATriton(torch.autograd.Function):
    """SA forward/backward by the Triton kernels (see the module doc)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, residual: Optional[torch.Tensor],
                groups: int, eps: float, cweight: torch.Tensor,
                cbias: torch.Tensor, sweight: torch.Tensor,
                sbias: torch.Tensor, gn_weight: torch.Tensor,
                gn_bias: torch.Tensor) -> torch.Tensor:
        if nc_p_strides(x) is None:
            x = x.contiguous()
        sx = nc_p_strides(x)
        n, c, h, w = x.shape
        p, k = h * w, c // (2 * groups)
        plan = _Plan(x, sx[1])
        params = [_param(t) for t in (cweight, cbias, sweight, sbias,
                                      gn_weight, gn_bias)]
        f32 = dict(device=x.device, dtype=torch.float32)
        part_mean = torch.empty(n * c * plan.splits, **f32)
        part_m2 = torch.empty(n * c * plan.splits, **f32)
        pivot, smean, rstd = (torch.empty(n * c, **f32) for _ in range(3))
        y = torch.empty_like(x)
        sy = nc_p_strides(y)
        if residual is not None:
            residual, sr = _strides(residual, x)
        else:
            sr = (0, 0, 0)
        _sa_stats_kernel[plan.grid_stats](
            x, part_mean, part_m2, c, p, *sx, plan.chunk, plan.splits,
            BLOCK_C=plan.block_c, BLOCK_P=plan.block_p)
        _sa_forward_kernel[plan.grid_tiles](
            x, x if residual is None else residual, y, part_mean, part_m2,
            pivot, smean, rstd, *params, c, k, p, *sx, *sy, *sr, plan.chunk,
            plan.splits, eps, HAS_RESIDUAL=residual is not None,
            BLOCK_C=plan.block_c, BLOCK_P=plan.block_p,
            SPLITS_P2=plan.splits_p2)
        relu = residual is not None
        ctx.save_for_backward(x, y if relu else None, pivot, smean, rstd,
                              *params)
        ctx.meta = (groups, relu, plan)
        ctx.param_dtypes = [t.dtype for t in (cweight, cbias, sweight,
                                              sbias, gn_weight, gn_bias)]
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, y, pivot, smean, rstd, cw, cb, sw, sb, gw, gb = ctx.saved_tensors
        groups, relu, plan = ctx.meta
        n, c, h, w = x.shape
        p, k = h * w, c // (2 * groups)
        grad_y, sg = _strides(grad_y, x)
        sx = nc_p_strides(x)
        sy = nc_p_strides(y) if relu else (0, 0, 0)
        f32 = dict(device=x.device, dtype=torch.float32)
        part_d = torch.empty(n * c * plan.splits, **f32)
        part_dx = torch.empty(n * c * plan.splits, **f32)
        sum_d = torch.empty(n * c, **f32)
        sum_dx = torch.empty(n * c, **f32)
        _sa_backward_sums_kernel[plan.grid_stats](
            x, x if y is None else y, grad_y, pivot, smean, rstd, part_d,
            part_dx,
            cw, cb, sw, sb, gw, gb, c, k, p, *sx, *sy, *sg, plan.chunk,
            plan.splits, HAS_RELU=relu, BLOCK_C=plan.block_c,
            BLOCK_P=plan.block_p)
        dx = torch.empty_like(x)
        write_dr = relu and ctx.needs_input_grad[1]
        dr = torch.empty_like(y) if write_dr else None
        _sa_backward_dx_kernel[plan.grid_tiles](
            x, x if y is None else y, grad_y, dx, dx if dr is None else dr,
            pivot, smean, rstd, part_d, part_dx, sum_d, sum_dx, cw, cb, sw, sb,
            gw, gb, c, k, p, *sx, *sy, *sg, *nc_p_strides(dx),
            *(nc_p_strides(dr) if dr is not None else (0, 0, 0)),
            plan.splits, HAS_RELU=relu, WRITE_DR=write_dr,
            BLOCK_C=plan.block_c, BLOCK_P=plan.block_p,
            SPLITS_P2=plan.splits_p2)
        grads = [torch.empty(k, **f32) for _ in range(6)]
        block_k = triton.next_power_of_2(k)
        _sa_param_grads_kernel[(1, )](
            sum_d, sum_dx, pivot, smean, rstd, sw, gw, gb, *grads, k,
            n * groups,
            BLOCK_G=max(1, min(triton.next_power_of_2(n * groups),
                               2048 // block_k)),
            BLOCK_K=block_k)
        grads = [g.view(t.shape).to(dtype) for g, t, dtype in zip(
            grads, (cw, cb, sw, sb, gw, gb), ctx.param_dtypes)]
        return (dx, dr, None, None, *grads)


def sa_triton(x: torch.Tensor, groups: int, cweight: torch.Tensor,
              cbias: torch.Tensor, sweight: torch.Tensor, sbias: torch.Tensor,
              gn_weight: torch.Tensor, gn_bias: torch.Tensor,
              eps: float = 1e-5,
              residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SA (and with ``residual``, ``relu(SA(x) + residual)``) by the Triton
    kernels; same contract as :func:`~mmsa.ops.sa_reference`, the output in
    ``x``'s dtype and memory format. Callers check
    :func:`~mmsa.ops.triton_support.triton_unsupported` first."""
    with on_device(x):
        return SATriton.apply(x, residual, groups, eps, cweight, cbias,
                              sweight, sbias, gn_weight, gn_bias)
