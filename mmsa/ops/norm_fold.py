"""BatchNorm as a per-plane affine map computed from per-plane moments.

The block-end kernels read ``z`` (conv3's output) once for the mean and
variance of every (sample, channel) plane. BatchNorm's ``x = a * z + b``
follows from those: with running statistics directly, in training from the
batch statistics, which merge the planes' moments over the samples (and,
for ``SyncBatchNorm``, over the ranks). Each plane's moments are kept about
a per-channel shift (the channel's first value) so that planes far from
zero mean lose no precision: ``x = a * (z - shift - mean) + m`` with ``m``
the plane's mean of ``x``.

Everything here works on N x C tensors with autograd: the kernels' backward
differentiates it again from the saved moments (microseconds) instead of
keeping its graph.
"""
from typing import NamedTuple, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ['NormFold', 'norm_fold', 'batch_moments', 'fold_moments',
           'update_running_stats']

Tensor = torch.Tensor


class NormFold(NamedTuple):
    """How a BatchNorm module is folded (Python values only; its tensors
    travel separately: weight, bias, running mean and variance).

    Attributes:
        batch_stats (bool): Normalise with the batch's statistics (training,
            or no running statistics), else with the running ones.
        update (bool): Update the running statistics (training with
            ``track_running_stats``).
        eps (float): The norm's epsilon.
        momentum (float, optional): Its momentum; None: cumulative average.
        group (optional): The process group whose ranks' batches are one
            batch (``SyncBatchNorm`` in a distributed run), else None.
    """
    batch_stats: bool
    update: bool
    eps: float
    momentum: Optional[float]
    group: object = None


_FORWARDS = (_BatchNorm.forward, nn.SyncBatchNorm.forward)


def norm_fold(norm: nn.Module) -> Tuple[Optional[NormFold], Optional[str]]:
    """``(fold, None)`` for a BatchNorm whose forward is torch's, else
    ``(None, why not)`` (another norm, or a subclass with its own forward:
    the block then takes the plain composition)."""
    if not isinstance(norm, _BatchNorm) or \
            type(norm).forward not in _FORWARDS:
        return None, (f'the norm is {type(norm).__name__}; the kernels fold '
                      f'BatchNorm/SyncBatchNorm')
    if norm.running_mean is None and norm.track_running_stats:
        return None, 'the BatchNorm has no running statistics to track'
    batch_stats = norm.training or norm.running_mean is None
    group = None
    if isinstance(norm, nn.SyncBatchNorm) and batch_stats and \
            norm.training and dist.is_available() and dist.is_initialized():
        pg = norm.process_group or dist.group.WORLD
        if dist.get_world_size(pg) > 1:
            group = pg
    return NormFold(batch_stats=batch_stats,
                    update=norm.training and norm.track_running_stats,
                    eps=norm.eps, momentum=norm.momentum, group=group), None


class _SumOverRanks(torch.autograd.Function):
    """``total``, the sum of ``local`` over the ranks, as a function of
    ``local``: the forward hands back the total the forward pass already
    reduced (no communication); the backward sums the gradients over the
    ranks, as SyncBatchNorm's backward does."""

    @staticmethod
    def forward(ctx, local: Tensor, total: Tensor, group) -> Tensor:
        ctx.group = group
        return total.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None, None


def _sum_over_ranks(local: Tensor, group, saved: Optional[Tensor]
                    ) -> Tensor:
    if saved is None:  # the forward pass: reduce now
        total = local.detach().clone()
        dist.all_reduce(total, group=group)
        return total
    return _SumOverRanks.apply(local, saved, group)


def batch_moments(shift: Tensor, mean: Tensor, var: Tensor, plane: int,
                  group=None,
                  saved: Optional[Tuple[Tensor, Tensor]] = None) -> tuple:
    """Batch mean (about the shift) and variance per channel from the
    planes' moments, the batch's element count (a float, or a tensor when
    the ranks summed it), and what a SyncBatchNorm pass reduced over the
    ranks (to hand back as ``saved`` when the backward differentiates
    again)."""
    n = mean.shape[0]
    if group is None:
        mu = mean.mean(0)
        # Chan: the mean within-plane variance plus the planes' spread
        return (mu, var.mean(0) + (mean - mu).square().mean(0),
                float(n * plane), ())
    # each rank has its own shift: the ranks sum plain means
    count = mean.new_full((1, ), float(n * plane))
    sums = _sum_over_ranks(
        torch.cat([(mean + shift).sum(0) * plane, count]), group,
        None if saved is None else saved[0])
    total = sums[-1]
    mu = sums[:-1] / total - shift
    m2 = _sum_over_ranks((var + (mean - mu).square()).sum(0) * plane, group,
                         None if saved is None else saved[1])
    return mu, m2 / total, total, (sums.detach(), m2.detach())


def fold_moments(shift: Tensor, mean: Tensor, var: Optional[Tensor],
                 plane: int, fold: Optional[NormFold],
                 weight: Optional[Tensor], bias: Optional[Tensor],
                 running_mean: Optional[Tensor],
                 running_var: Optional[Tensor],
                 saved: Optional[Tuple[Tensor, Tensor]] = None):
    """The norm's ``x = a * (z - shift - mean) + m`` for every plane.

    Args:
        shift (Tensor): (C,) the per-channel shift of the moments.
        mean (Tensor): (N, C) each plane's mean of ``z - shift``.
        var (Tensor): (N, C) each plane's variance of ``z``.
        plane (int): H * W.
        fold (NormFold, optional): The norm; None: ``x = z``.
        weight, bias, running_mean, running_var: The norm's tensors.
        saved (tuple, optional): A SyncBatchNorm forward's reduced sums,
            when the backward differentiates this again.

    Returns:
        tuple: ``a`` (C,) or None for 1, ``m`` (N, C), the variance of
        ``x`` (N, C), and the batch statistics ``(mean, var, count,
        reduced)`` (None with running statistics or no norm), the mean
        about ``shift``.
    """
    if fold is None:
        return None, mean + shift, var, None
    batch = None
    if fold.batch_stats:
        mu, sigma2, count, reduced = batch_moments(shift, mean, var, plane,
                                                   fold.group, saved)
        batch = (mu, sigma2, count, reduced)
        centred = mean - mu
    else:
        mu, sigma2 = running_mean.to(mean.dtype), running_var.to(mean.dtype)
        centred = (shift - mu) + mean
    a = torch.rsqrt(sigma2 + fold.eps)
    if weight is not None:
        a = a * weight.to(mean.dtype)
    m = a * centred
    if bias is not None:
        m = m + bias.to(mean.dtype)
    return a, m, var * a.square(), batch


def update_running_stats(fold: NormFold, shift: Tensor, batch,
                         running_mean: Tensor, running_var: Tensor,
                         num_batches_tracked: Optional[Tensor]) -> None:
    """torch's update of the running statistics: momentum, the unbiased
    batch variance, and with ``momentum=None`` the cumulative average,
    whose factor ``1 / num_batches_tracked`` stays on the device (torch's
    own BatchNorm reads it on the host)."""
    mu, sigma2, count = batch[0], batch[1], batch[2]
    with torch.no_grad():
        factor = fold.momentum
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
            if factor is None:
                factor = num_batches_tracked.reciprocal().to(
                    running_mean.dtype)
        if factor is None:
            factor = 0.
        unbiased = sigma2 * (count / (count - 1))
        running_mean.lerp_((mu + shift).to(running_mean.dtype), factor)
        running_var.lerp_(unbiased.to(running_var.dtype), factor)
