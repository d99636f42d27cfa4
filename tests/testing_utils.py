"""Checks shared by the attention tests, and a loader for the tools.

Parameters are always randomised before comparing against a reference:
the paper inits (SA's zero weights, SGE's zero weights) make half the math
vanish and would hide bugs.
"""
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional, Sequence, Tuple

import pytest
import torch
import torch.nn as nn

from mmsa.testing import official_sa, randomize_  # noqa: F401 (re-exported)

ROOT = Path(__file__).resolve().parents[1]

# Batch 1, non-square and odd spatial sizes.
SHAPES: Sequence[Tuple[int, int, int, int]] = ((1, 64, 7, 7), (2, 128, 5, 9),
                                               (3, 256, 12, 4))


def interpreting() -> bool:
    """Whether Triton's interpreter runs the kernels (tests/conftest.py
    sets ``TRITON_INTERPRET=1`` unless it is set already)."""
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


def cuda_unavailable(gpus: int = 1) -> Optional[str]:
    """Why the CUDA tests cannot run here, or None."""
    if not torch.cuda.is_available():
        return 'no CUDA device'
    if torch.cuda.device_count() < gpus:
        return (f'needs {gpus} CUDA devices, found '
                f'{torch.cuda.device_count()}')
    if interpreting():
        return ("TRITON_INTERPRET=1 would run the kernels in Triton's "
                'interpreter: run the CUDA tests with TRITON_INTERPRET=0 '
                'pytest -m cuda (tools/gpu_check.py does)')
    return None


def cuda_test(gpus: int = 1) -> Callable:
    """Marks a test ``cuda`` (``pytest -m cuda`` selects it) and skips it
    where :func:`cuda_unavailable` says why."""
    reason = cuda_unavailable(gpus)

    def mark(fn: Callable) -> Callable:
        fn = pytest.mark.skipif(reason is not None, reason=reason or '')(fn)
        return pytest.mark.cuda(fn)

    return mark


#: ``device`` values of a kernel test: 'cpu' (Triton's interpreter) and
#: 'cuda' (the compiled kernels, marked ``cuda``).
KERNEL_DEVICES = [
    pytest.param('cpu', marks=pytest.mark.skipif(
        not interpreting(), reason="the kernels run on CPU tensors only in "
        "Triton's interpreter (TRITON_INTERPRET=1)")),
    pytest.param('cuda', marks=[pytest.mark.cuda, pytest.mark.skipif(
        cuda_unavailable() is not None, reason=cuda_unavailable() or '')]),
]


def load_tool(relpath: str) -> ModuleType:
    """Import a script under tools/ (not a package), e.g.
    ``'tools/model_converters/van2mmsa.py'``, as a module."""
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_close(actual: torch.Tensor, expected: torch.Tensor,
                 atol: float = 1e-5) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    diff = (actual - expected).abs().max().item()
    assert diff <= atol, f'max abs diff {diff:.3g} > {atol}'


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor,
                          rtol: float) -> None:
    """Max abs difference within ``rtol`` of the expected output's scale
    (its max magnitude), so float32 rounding is judged relative to the
    values it rounds."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    diff = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert diff <= rtol * scale, \
        f'max abs diff {diff:.3g} > {rtol:g} * output scale {scale:.3g}'


def ops_run(fn: Callable[[], object]) -> set:
    """The names of the ops (profiler events) that ``fn()`` ran, e.g.
    ``'mmsa::sa_fused'`` for SA's C++ kernel."""
    with torch.profiler.profile(activities=[
            torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {event.name for event in prof.events()}


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_gradcheck(module: nn.Module, shape: Tuple[int, ...]) -> None:
    """gradcheck in float64 w.r.t. the input and every parameter."""
    module = module.double()
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]

    def fn(inp, *params):
        return torch.func.functional_call(module, dict(zip(names, params)),
                                          (inp, ))

    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    inputs = (x, ) + tuple(p.detach().clone().requires_grad_()
                           for _, p in named)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


def check_channels_last(module: nn.Module, x: torch.Tensor) -> None:
    """Same result for a channels_last input, up to summation order."""
    expected = module(x)
    out = module(x.contiguous(memory_format=torch.channels_last))
    assert_close(out, expected,
                 atol=1e-5 * max(1., expected.abs().max().item()))


def check_bf16_autocast(module: nn.Module, x: torch.Tensor,
                        rtol: float = 5e-2) -> None:
    expected = module(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = module(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    err = (out.float() - expected).norm() / expected.norm()
    assert err <= rtol, f'bf16 relative error {err:.3g} > {rtol}'


def check_compile(module: nn.Module, x: torch.Tensor) -> None:
    """``torch.compile(fullgraph=True)`` traces the module without breaks.

    ``aot_eager`` exercises dynamo + AOTAutograd without C++ codegen, which
    keeps the test fast on CPU.
    """
    torch._dynamo.reset()
    compiled = torch.compile(module, backend='aot_eager', fullgraph=True)
    assert_close(compiled(x), module(x))


def run_common_checks(factory: Callable[[int], nn.Module],
                      channels: int = 64) -> None:
    """Shape, channels_last, bf16 autocast and compile for one module."""
    module = randomize_(factory(channels)).eval()
    x = torch.randn(2, channels, 9, 11)
    with torch.no_grad():
        assert module(x).shape == x.shape
        check_channels_last(module, x)
        check_bf16_autocast(module, x)
    check_compile(module, x)


def cpu_config(node):
    """A config node (dict/list, e.g. ``cfg.model``) made buildable on one
    CPU process, in place: SyncBN -> BN, no ``init_cfg`` or ``pretrained``
    (no download). Returns ``node``."""
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
        node.pop('init_cfg', None)
        node.pop('pretrained', None)
        for value in node.values():
            cpu_config(value)
    elif isinstance(node, list):
        for value in node:
            cpu_config(value)
    return node
