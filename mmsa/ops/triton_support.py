"""Whether mmsa's Triton kernels can run, and the launch plans they share.

Triton ships with every Linux CUDA build of PyTorch, so GPU users get the
fused kernels without compiling anything. The kernel modules
(``block_end_triton.py``, ``triton_gate.py``) are imported on the first call
that needs them, never by ``import mmsa``. With ``TRITON_INTERPRET=1`` set
before that import, Triton's interpreter runs the same kernels on CPU
tensors: the tests check them against the reference compositions that way.
"""
import contextlib
import importlib
import os
from typing import Optional, Tuple

import torch

__all__ = ['triton_unavailable', 'triton_unsupported', 'interpreting',
           'load_kernels', 'nc_p_strides', 'folded', 'needs_int64',
           'new_like', 'plan_tiles', 'on_device', 'programs_wanted', 'tile']

# tl.* calls the kernels use exist in this form from Triton 2.1 on; the
# interpreter runs CPU tensors from Triton 3.0.
MIN_TRITON = (2, 1)
MIN_TRITON_INTERPRETER = (3, 0)
# Offsets are int32 while every address a kernel forms stays below this.
INT32_SPAN = 2**31 - 1

_STATE = {}


def _version(text: str) -> Tuple[int, ...]:
    parts = []
    for piece in text.split('+')[0].split('.')[:2]:
        digits = ''.join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def interpreting() -> bool:
    """Whether Triton's interpreter runs the kernels (on CPU tensors)."""
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


def triton_unavailable() -> Optional[str]:
    """Why the Triton kernels cannot run at all here, or None."""
    if 'reason' not in _STATE:
        _STATE['reason'] = _probe()
    return _STATE['reason']


def _probe() -> Optional[str]:
    try:
        import triton
    except Exception as err:  # ImportError, or a broken install
        return (f'triton is not importable ({type(err).__name__}: {err}); '
                'it ships with Linux CUDA builds of PyTorch')
    found = _version(getattr(triton, '__version__', '0'))
    need = MIN_TRITON_INTERPRETER if interpreting() else MIN_TRITON
    if found < need:
        what = ('its interpreter (TRITON_INTERPRET=1)'
                if interpreting() else 'the kernels')
        return (f'triton {triton.__version__} is too old for {what}; '
                f'mmsa needs triton >= {".".join(map(str, need))}')
    return None


def triton_unsupported(x: torch.Tensor) -> Optional[str]:
    """Why the Triton kernels cannot take ``x``, or None when they can."""
    reason = triton_unavailable()
    if reason:
        return reason
    if x.device.type == 'cpu':
        if not interpreting():
            return ('the Triton kernels run on CUDA (or on CPU under '
                    'TRITON_INTERPRET=1), got a CPU input')
    elif x.device.type != 'cuda':
        return f'the Triton kernels run on CUDA, got a {x.device.type} input'
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f'the Triton kernels take float32/float16/bfloat16, ' \
            f'got {x.dtype}'
    if x.dim() != 4 or x.numel() == 0:
        return (f'the Triton kernels take non-empty N x C x H x W input, '
                f'got shape {tuple(x.shape)}')
    return None


def needs_int64(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether an offset into any of ``tensors`` (None: skipped) can pass
    int32: the largest address of a view, sum of (size - 1) * |stride|,
    not its element count (a strided view spans more)."""
    for t in tensors:
        if t is not None and sum(
                (size - 1) * abs(stride)
                for size, stride in zip(t.shape, t.stride())) > INT32_SPAN:
            return True
    return False


def load_kernels(name: str):
    """``mmsa.ops.<name>`` (a Triton kernel module), imported once."""
    module = _STATE.get(name)
    if module is None:
        module = _STATE[name] = importlib.import_module(f'mmsa.ops.{name}')
    return module


def on_device(x: torch.Tensor):
    """A context that makes ``x``'s GPU the current one: Triton launches on
    the current device (autograd's backward threads already switch)."""
    if x.device.type == 'cuda' and \
            x.device.index != torch.cuda.current_device():
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()


def nc_p_strides(t: torch.Tensor) -> Optional[Tuple[int, int, int]]:
    """(n, c, p) strides of an N x C x H x W tensor whose H and W fold into
    one axis p = h * W + w (contiguous, channels_last, expanded...), or None
    where they do not."""
    sn, sc, sh, sw = t.stride()
    h, w = t.shape[2:]
    if h > 1 and w > 1 and sh != w * sw:
        return None
    return sn, sc, (sw if w > 1 else sh)


def folded(t: torch.Tensor, like: torch.Tensor
           ) -> Tuple[torch.Tensor, Tuple[int, int, int]]:
    """``t`` and its (n, c, p) strides; a layout that does not fold H and W
    into one axis is copied into ``like``'s memory format first."""
    strides = nc_p_strides(t)
    if strides is None:
        fmt = (torch.channels_last
               if like.is_contiguous(memory_format=torch.channels_last)
               and not like.is_contiguous() else torch.contiguous_format)
        t = t.contiguous(memory_format=fmt)
        strides = nc_p_strides(t)
    return t, strides


def new_like(z: torch.Tensor) -> torch.Tensor:
    """An empty tensor like ``z`` in a layout the kernels address: ``z``'s
    own where H and W fold into one axis, else contiguous."""
    out = torch.empty_like(z)
    return out if nc_p_strides(out) is not None else out.contiguous()


def programs_wanted(device: torch.device) -> int:
    """Programs that keep the device busy: 4 per multiprocessor on CUDA;
    under the interpreter 8 (it runs them one by one, and the tests still
    see planes split across programs)."""
    if device.type != 'cuda':
        return 8
    key = ('programs', device.index)
    if key not in _STATE:
        _STATE[key] = 4 * torch.cuda.get_device_properties(
            device).multi_processor_count
    return _STATE[key]


def tile(channels: int, p: int, channels_last: bool, max_p: int,
         max_c: int = 2048) -> Tuple[int, int]:
    """(block_c, block_p) of a ~2k-value tile whose long side is the
    contiguous axis: up to 64 channels in channels_last, else up to
    ``max_p`` positions (and ``max_c`` channels)."""
    import triton
    if channels_last:
        block_c = min(triton.next_power_of_2(channels), 64)
        return block_c, max(1, min(triton.next_power_of_2(p),
                                   2048 // block_c))
    block_p = min(triton.next_power_of_2(p), max_p)
    return max(1, min(triton.next_power_of_2(channels), 2048 // block_p,
                      max_c)), block_p


def plan_tiles(device: torch.device, rows: int, channels: int, p: int,
               channel_stride: int) -> Tuple[int, int, int, int]:
    """(block_c, block_p, splits, chunk) for a reduction over p of
    ``rows`` (samples) x ``channels`` planes of ``p`` values.

    Tiles hold ~2k values with the contiguous axis the long one; the p axis
    is cut into ``splits`` chunks of ``chunk`` values (a multiple of
    ``block_p``) where there are too few planes to fill the device (stage 1
    of a ResNet in channels_last: 2 x 4 channel blocks).
    """
    import triton
    block_c, block_p = tile(channels, p, channel_stride == 1 and channels > 1,
                            max_p=2048, max_c=16)
    programs = rows * triton.cdiv(channels, block_c)
    splits = max(1, min(triton.cdiv(programs_wanted(device), programs),
                        triton.cdiv(p, block_p), 64))
    chunk = triton.cdiv(triton.cdiv(p, splits), block_p) * block_p
    return block_c, block_p, triton.cdiv(p, chunk), chunk
