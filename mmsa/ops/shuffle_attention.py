"""Shuffle Attention as two functions: the reference and the fused kernel.

Both halves of SA are ``x * sigmoid(A * x + B)`` with per-(sample, channel)
coefficients (channel half ``A = 0, B = cw * mean + cb``; spatial half
``A = sw * gw * rstd, B = sw * (gb - gw * mean * rstd) + sb``), and the
channel shuffle is an index map on the output channel. :func:`sa_fused`
runs that as one statistics pass and one element-wise pass per (sample,
channel) plane, writing the shuffled output directly; its backward is one
pass for two per-plane sums and one pass writing the input gradient. The
kernel and its autograd node (``csrc/shuffle_attention.cpp``) are a CPU C++
extension built at install time; on CUDA the Triton kernels of
``triton_sa.py`` do the same passes. :func:`sa_reference` is the PyTorch
composition every kernel is tested against and falls back to, and
:func:`apply_shuffle_attention` the one dispatcher that picks among
them.
"""
import importlib
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..utils.compat import is_autocast_enabled, is_compiling, is_exporting
from .dispatch import log_fallback_once
from .triton_support import load_kernels, triton_unsupported

try:
    # (``from . import`` would blame a circular import for a missing file)
    _ext = importlib.import_module('._sa_cpu', __package__)
    _EXT_ERROR = ''
except ImportError as err:  # not built: no compiler, isolated build, ...
    _ext = None
    _EXT_ERROR = str(err)

__all__ = [
    'channel_shuffle', 'sa_gates', 'sa_reference', 'sa_fused',
    'sa_fused_if_supported', 'sa_fused_unsupported', 'apply_shuffle_attention',
    'SA_IMPLS', 'empty_output_cache', 'output_cache_bytes',
    'set_output_cache_limit'
]

#: ``'auto'``: Triton on CUDA, the C++ kernel on CPU; ``'fused'``: the C++
#: CPU kernel; ``'triton'``: the Triton kernels; ``'reference'``: the
#: PyTorch composition. Where the chosen kernel cannot run, the reference
#: runs (logged once per reason).
SA_IMPLS = ('auto', 'fused', 'triton', 'reference')


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet shuffle: channel ``g*C/groups + i`` -> ``i*groups + g``."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(
        n, c, h, w)


def sa_gates(x: torch.Tensor,
             groups: int,
             cweight: torch.Tensor,
             cbias: torch.Tensor,
             sweight: torch.Tensor,
             sbias: torch.Tensor,
             gn_weight: torch.Tensor,
             gn_bias: torch.Tensor,
             eps: float = 1e-5):
    """SA's two gates (the paper's Eq. 2-3), before the channel shuffle.

    Returns:
        tuple: The channel-branch weights ``sigmoid(cw * GAP(x) + cb)`` of
        shape ``(N, G, k)`` and the spatial-branch gate
        ``sigmoid(sw * GN(x) + sb)`` of shape ``(N, G, k, H, W)``, with
        ``k = C / (2 * groups)``. Each multiplies its half of each group.
    """
    n, c, h, w = x.shape
    xg = x.reshape(n * groups, c // groups, h, w)
    x_channel, x_spatial = xg.chunk(2, dim=1)
    k = x_channel.shape[1]
    gate_c = (cweight * x_channel.mean((2, 3), keepdim=True) +
              cbias).sigmoid()
    x_norm = F.group_norm(x_spatial, k, gn_weight, gn_bias, eps)
    gate_s = (sweight * x_norm + sbias).sigmoid()
    return gate_c.reshape(n, groups, k), gate_s.reshape(n, groups, k, h, w)


def sa_reference(x: torch.Tensor,
                 groups: int,
                 cweight: torch.Tensor,
                 cbias: torch.Tensor,
                 sweight: torch.Tensor,
                 sbias: torch.Tensor,
                 gn_weight: torch.Tensor,
                 gn_bias: torch.Tensor,
                 eps: float = 1e-5) -> torch.Tensor:
    """SA forward as a composition of PyTorch ops (the paper's Eq. 2-3).

    ``cweight``..``sbias`` have shape ``(1, k, 1, 1)`` and ``gn_weight``,
    ``gn_bias`` shape ``(k,)``, with ``k = C / (2 * groups)``.
    """
    n, c, h, w = x.shape
    gate_c, gate_s = sa_gates(x, groups, cweight, cbias, sweight, sbias,
                              gn_weight, gn_bias, eps)
    xg = x.reshape(n, groups, 2, c // (2 * groups), h, w)
    out = torch.stack([xg[:, :, 0] * gate_c[..., None, None],
                       xg[:, :, 1] * gate_s], dim=2)
    return channel_shuffle(out.reshape(n, c, h, w), 2)


def sa_fused_unsupported(x: torch.Tensor) -> Optional[str]:
    """Why :func:`sa_fused` cannot take ``x``, or None when it can (the rule
    :func:`sa_fused_if_supported` applies in C++)."""
    if _ext is None:
        return ('the fused SA kernel mmsa.ops._sa_cpu is not built '
                f'({_EXT_ERROR}); reinstall with `pip install '
                '--no-build-isolation -e .` and a C++ compiler')
    if x.device.type != 'cpu':
        return f'the fused SA kernel is CPU-only, got a {x.device.type} input'
    if x.dim() == 4 and x.shape[2] * x.shape[3] == 0:
        return (f'the fused SA kernel needs planes of at least one value, got '
                f'H x W = {x.shape[2]} x {x.shape[3]}')
    if x.dtype in (torch.float32, torch.float64):
        return None
    if is_autocast_enabled('cpu'):  # sa_fused casts to float32
        return None
    return f'the fused SA kernel takes float32/float64, got {x.dtype}'


def output_cache_bytes() -> int:
    """Bytes the fused kernel's output cache holds, in use or free.

    The kernel takes its outputs of 1 MiB and more from storages of earlier
    calls that nothing else holds any more, so that a training or inference
    loop does not pay first-touch page faults for fresh memory on every
    call. The cache holds at most ``MMSA_SA_CACHE_MB`` MiB (default 1024;
    ``0`` turns it off), or what :func:`set_output_cache_limit` set.
    """
    return _ext.output_cache_bytes() if _ext is not None else 0


def empty_output_cache() -> int:
    """Free the cached outputs nothing uses (as ``torch.cuda.empty_cache``
    does for CUDA); returns the bytes still held by live outputs."""
    return _ext.empty_output_cache() if _ext is not None else 0


def set_output_cache_limit(mib: int) -> None:
    """Most MiB the output cache may hold from now on; 0 turns it off."""
    if not isinstance(mib, int) or mib < 0:
        raise ValueError(f'set_output_cache_limit: mib must be an int >= 0 '
                         f'(0 turns the cache off), got {mib!r}')
    if _ext is not None:
        _ext.set_output_cache_limit(mib * 2**20)


def sa_fused(x: torch.Tensor,
             groups: int,
             cweight: torch.Tensor,
             cbias: torch.Tensor,
             sweight: torch.Tensor,
             sbias: torch.Tensor,
             gn_weight: torch.Tensor,
             gn_bias: torch.Tensor,
             eps: float = 1e-5,
             residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SA forward by the fused CPU kernel; same contract as
    :func:`sa_reference`.

    With ``residual`` (the shape of ``x``) it returns
    ``relu(sa(x) + residual)``, the end of a ResNet block, in the same one
    element-wise pass; the backward then takes the ReLU's mask from the
    output and returns the residual's gradient too.

    Takes float32/float64 CPU input of any memory format (channels_last is
    made contiguous first) and returns a contiguous tensor; under CPU
    autocast the inputs are cast to float32 (the kernel is float32/float64)
    and it runs outside autocast. Other input raises ValueError with
    :func:`sa_fused_unsupported`'s reason. Differentiable once: with
    ``create_graph=True`` differentiating the gradients raises (use
    :func:`sa_reference` for double backward). In profiles the forward is
    ``mmsa::sa_fused`` and the backward ``CppNode<mmsa::SAFused>``.
    """
    out = sa_fused_if_supported(x, groups, cweight, cbias, sweight, sbias,
                                gn_weight, gn_bias, eps, residual)
    if out is None:
        raise ValueError(f'sa_fused: {sa_fused_unsupported(x)}; '
                         f'sa_reference takes any input')
    return out


def sa_fused_if_supported(x: torch.Tensor,
                          groups: int,
                          cweight: torch.Tensor,
                          cbias: torch.Tensor,
                          sweight: torch.Tensor,
                          sbias: torch.Tensor,
                          gn_weight: torch.Tensor,
                          gn_bias: torch.Tensor,
                          eps: float = 1e-5,
                          residual: Optional[torch.Tensor] = None
                          ) -> Optional[torch.Tensor]:
    """:func:`sa_fused` where the kernel takes ``x``, else None (then
    :func:`sa_fused_unsupported` says why). The check runs in C++, in the
    same call as the kernel: the module's per-call path."""
    if _ext is None:
        return None
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f'sa_fused: residual shape {tuple(residual.shape)} '
                         f'differs from the input\'s {tuple(x.shape)}; the '
                         f'block\'s identity (or downsample) must match it')
    return _ext.fused_if_supported(x, residual, cweight, cbias, sweight,
                                   sbias, gn_weight, gn_bias, groups, eps)


def _like(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out`` in ``x``'s dtype and memory format (the C++ kernel and the
    reference return contiguous float32 for some inputs)."""
    if out.dtype != x.dtype:
        out = out.to(x.dtype)
    if not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def apply_shuffle_attention(x: torch.Tensor,
                            groups: int,
                            cweight: torch.Tensor,
                            cbias: torch.Tensor,
                            sweight: torch.Tensor,
                            sbias: torch.Tensor,
                            gn_weight: torch.Tensor,
                            gn_bias: torch.Tensor,
                            eps: float = 1e-5,
                            residual: Optional[torch.Tensor] = None,
                            impl: str = 'auto') -> Tuple[torch.Tensor, str]:
    """SA of ``x`` (with ``residual``: ``relu(SA(x) + residual)``) by the
    path ``impl`` asks for where it can run (see :data:`SA_IMPLS`), the
    reference under ``torch.compile`` and export.

    Returns:
        tuple: The output, in ``x``'s dtype and memory format, and the path
        that ran: ``'triton'``, ``'fused'`` (the C++ kernel) or
        ``'reference'``.
    """
    if residual is not None and residual.shape != x.shape:
        raise ValueError(
            f'SA: residual shape {tuple(residual.shape)} differs from the '
            f"input's {tuple(x.shape)}; the block's identity (or its "
            f'downsample) must match the attention input')
    args = (x, groups, cweight, cbias, sweight, sbias, gn_weight, gn_bias,
            eps)
    if impl != 'reference' and not (is_compiling() or is_exporting()):
        if impl == 'triton' or (impl == 'auto' and x.device.type != 'cpu'):
            reason = triton_unsupported(x)
            if reason is None:
                return load_kernels('triton_sa').sa_triton(
                    *args, residual=residual), 'triton'
        else:
            out = sa_fused_if_supported(*args, residual)
            if out is not None:
                return _like(out, x), 'fused'
            reason = (sa_fused_unsupported(x) or
                      'the fused kernel declined the input')
        log_fallback_once('ShuffleAttention', reason)
    out = sa_reference(*args)
    if residual is not None:
        out += residual
        out = torch.relu_(out)
    return _like(out, x), 'reference'
