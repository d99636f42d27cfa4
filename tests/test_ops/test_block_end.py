"""The block-end op, ``relu(attention(norm(z)) + identity)``, against the
float64 reference composition.

The Triton kernels run under Triton's interpreter on CPU tensors
(tests/conftest.py sets ``TRITON_INTERPRET=1`` before anything imports
them): the kernel code that runs on CUDA, checked here for the output, the
input's, the identity's, BatchNorm's and the attention's gradients and the
running statistics, against the same modules' reference path in float64.
Each kernel test also runs on a GPU (its ``device='cuda'`` case, marked
``cuda``: ``TRITON_INTERPRET=0 pytest -m cuda``), compiled, against the same
float64 reference on the CPU; the last tests here check what only a GPU
shows (offsets past 2^31 elements, planes past 2^21 positions, an input on
the second GPU, bit-identical repeats at a ResNet stage's size).
The cases cover each axis pairwise, not the full cross product: attention
(SA, SE, ECA, CBAM, SGE), norm (none, BN training, eval, frozen affine,
cumulative average, no running statistics), dtype, layout, H*W not a
multiple of a block, batch 1, 1x1 planes, planes of mean 1e4.
"""
import contextlib
import copy
import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
import torch
from testing_utils import (KERNEL_DEVICES, cuda_test, cuda_unavailable,
                           randomize_)

import mmsa.ops.dispatch as dispatch
import mmsa.ops.triton_support as support
from mmsa.attention import (ATTENTIONS, CBAM, EfficientChannelAttention,
                            ShuffleAttention, SpatialGroupEnhance,
                            SqueezeExcitation, build_attention)
from mmsa.ops import block_end, gate_reference
from mmsa.ops.block_end_cpu import block_end_cpu_unsupported

ROOT = Path(__file__).resolve().parents[2]

needs_triton = pytest.mark.skipif(
    support.triton_unavailable() is not None,
    reason=f'Triton cannot run here: {support.triton_unavailable()}')

F32, F16, BF16, F64 = (torch.float32, torch.float16, torch.bfloat16,
                       torch.float64)
# dtype -> tolerance against float64: relative to the scale in float32 and
# float64, relative in norm for half precision (a ReLU mask may flip at
# values that round to 0)
TOLERANCE = {F32: 1e-5, F16: 1e-2, BF16: 2e-2, F64: 1e-10}

ATTENTION = {
    'SA': lambda c: ShuffleAttention(c, groups=4),
    'SE': lambda c: SqueezeExcitation(c, reduction=4),
    'ECA': lambda c: EfficientChannelAttention(c, kernel_size=3),
    'CBAM': lambda c: CBAM(c, reduction=4, kernel_size=3),
    'SGE': lambda c: SpatialGroupEnhance(c, groups=4),
}


def _norm(kind: str, channels: int, seed: int):
    if kind == 'none':
        return None
    norm = torch.nn.BatchNorm2d(
        channels, momentum=None if kind == 'cumulative' else 0.1,
        track_running_stats=kind != 'untracked')
    randomize_(norm, seed)
    norm.train(kind in ('train', 'cumulative'))
    if kind == 'frozen':
        norm.requires_grad_(False)
    return norm


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == 'channels_last':
        return t.contiguous(memory_format=torch.channels_last)
    if layout == 'strided':  # every other column of a wider tensor
        wide = torch.zeros(*t.shape[:3], 2 * t.shape[3], dtype=t.dtype,
                           device=t.device)
        wide[..., ::2] = t
        return wide[..., ::2]
    return t.contiguous()


def _run(attention, norm, z, identity, grad, impl, dtype=F32,
         layout='contiguous', device='cpu'):
    """One forward and backward of the op on ``device``: the output, the
    gradients by name and the norm's buffers after, on the CPU. Parameters
    stay float32 (float64 for the reference); half-precision tensors run
    under autocast, as AMP runs them."""
    attention = copy.deepcopy(attention).to(device)
    attention.impl = impl
    norm = None if norm is None else copy.deepcopy(norm).to(device)
    if dtype == torch.float64:
        attention.double()
        norm = None if norm is None else norm.double()
    zz = _layout(z.to(device, dtype), layout).detach().requires_grad_()
    ii = None
    if identity is not None:
        ii = _layout(identity.to(device, dtype),
                     layout).detach().requires_grad_()
    # (torch 2.1 refuses a CPU autocast of another dtype even disabled)
    half = dtype in (F16, BF16)
    with torch.autocast(zz.device.type, dtype=dtype) if half else \
            contextlib.nullcontext():
        out = block_end(zz, attention, norm, ii)
    assert out.device == zz.device
    out.backward(grad.to(device, out.dtype))
    grads = {'z': zz.grad, 'identity': None if ii is None else ii.grad}
    grads.update({f'attention.{n}': p.grad
                  for n, p in attention.named_parameters()})
    if norm is not None:
        grads.update({f'norm.{n}': p.grad for n, p in norm.named_parameters()})
    buffers = {} if norm is None else dict(norm.named_buffers())
    return out.detach().cpu(), _cpu(grads), _cpu(buffers)


def _cpu(tensors: dict) -> dict:
    return {k: None if t is None else t.cpu() for k, t in tensors.items()}


def _error(actual: torch.Tensor, expected: torch.Tensor, dtype) -> float:
    actual, expected = actual.double(), expected.double()
    if dtype in (F32, F64):
        return ((actual - expected).abs().max() /
                expected.abs().max().clamp_min(1.)).item()
    return ((actual - expected).norm() /
            expected.norm().clamp_min(1e-12)).item()


def _assert_matches(got, ref, dtype, layout='contiguous', tolerance=None):
    out, grads, buffers = got
    ref_out, ref_grads, ref_buffers = ref
    assert out.dtype == dtype
    if layout == 'channels_last':
        assert out.is_contiguous(memory_format=torch.channels_last)
    # in half precision, outputs within rounding of the ReLU's kink may
    # land on its other side: their pointwise gradients are not compared
    near_kink = ref_out.abs() <= 4 * torch.finfo(dtype).eps * \
        ref_out.abs().max()
    checks = [('output', out, ref_out)]
    for name, g in ref_grads.items():
        if g is None:
            continue
        a = grads[name]
        if dtype != F32 and name in ('z', 'identity'):
            a = torch.where(near_kink, 0., a.double())
            g = torch.where(near_kink, 0., g)
        checks.append((name, a, g))
    checks += [(name, buffers[name], b) for name, b in ref_buffers.items()]
    for name, a, b in checks:
        assert a is not None, f'{name}: no gradient'
        err = _error(a, b, dtype)
        limit = tolerance or TOLERANCE[dtype]
        assert err <= limit, f'{name}: error {err:.3g} ({dtype})'


def _check(name, norm_kind, dtype, layout, shape, identity, offset,
           seed=0, device='cpu', ref_device='cpu', tolerance=None,
           impl='triton'):
    """The op by the kernels (``impl``) on ``device`` against the reference
    path in float64 on ``ref_device``."""
    gen = torch.Generator().manual_seed(seed)
    c = shape[1]
    norm = _norm(norm_kind, c, seed + 2)
    # the attention's own norms (CBAM's) in the block's mode
    attention = randomize_(ATTENTION[name](c), seed + 1).train(
        norm_kind in ('train', 'cumulative'))
    z = torch.randn(shape, generator=gen) * 2 + 1 + offset
    idt = torch.randn(shape, generator=gen) if identity else None
    grad = torch.randn(shape, generator=gen)
    got = _run(attention, norm, z, idt, grad, impl, dtype, layout, device)
    ref = _run(attention, norm, z.double(), None if idt is None else
               idt.double(), grad.double(), 'reference', torch.float64,
               device=ref_device)
    # x ~ 1e4 (a norm with running statistics keeps the offset) saturates
    # the gates: where float32 rounds s to 1, the tiny s (1 - s) of their
    # gradients is 0 (as in PyTorch's float32 composition)
    _assert_matches(got, ref, dtype, layout, tolerance or (
        10 * TOLERANCE[dtype] if offset else None))


def _case_id(case) -> str:
    name, norm, dtype, layout, shape, identity, offset = case
    return '-'.join([name, norm, str(dtype)[6:], layout,
                     'x'.join(map(str, shape)), 'id' if identity else 'noid'] +
                    (['1e4'] if offset else []))


CASES = [
    # attention, norm, dtype, layout, shape, identity, offset
    ('SA', 'train', F32, 'contiguous', (2, 32, 5, 7), True, 0.),
    ('SA', 'eval', F32, 'channels_last', (1, 32, 1, 1), True, 0.),
    ('SA', 'none', BF16, 'strided', (2, 32, 5, 7), False, 0.),
    ('SA', 'cumulative', F16, 'contiguous', (3, 32, 9, 11), True, 0.),
    ('SA', 'frozen', F32, 'strided', (2, 32, 3, 5), True, 1e4),
    ('SA', 'train', F32, 'contiguous', (2, 32, 9, 7), True, 1e4),
    ('SA', 'untracked', F32, 'channels_last', (2, 32, 5, 7), False, 0.),
    ('SE', 'train', F32, 'channels_last', (2, 32, 5, 7), True, 0.),
    ('SE', 'frozen', BF16, 'contiguous', (2, 32, 5, 7), True, 0.),
    ('SE', 'none', F32, 'strided', (1, 32, 1, 1), False, 0.),
    ('SE', 'untracked', F16, 'channels_last', (3, 32, 9, 11), True, 0.),
    ('SE', 'eval', F32, 'contiguous', (2, 32, 9, 7), True, 1e4),
    ('ECA', 'eval', F32, 'strided', (2, 32, 5, 7), True, 0.),
    ('ECA', 'train', BF16, 'channels_last', (2, 32, 5, 7), True, 0.),
    ('ECA', 'cumulative', F32, 'contiguous', (1, 32, 9, 11), True, 0.),
    ('ECA', 'none', F16, 'contiguous', (1, 32, 1, 1), False, 0.),
    ('ECA', 'train', F32, 'strided', (2, 32, 5, 7), True, 1e4),
    ('CBAM', 'train', F32, 'contiguous', (2, 32, 5, 7), True, 0.),
    ('CBAM', 'eval', BF16, 'channels_last', (1, 32, 1, 1), True, 0.),
    ('CBAM', 'none', F32, 'strided', (3, 32, 9, 11), False, 0.),
    ('SGE', 'train', F32, 'channels_last', (2, 32, 5, 7), True, 0.),
    ('SGE', 'frozen', F16, 'strided', (3, 32, 9, 11), True, 0.),
    ('SGE', 'none', F32, 'contiguous', (2, 32, 5, 7), False, 0.),
]


@needs_triton
@pytest.mark.parametrize('device', KERNEL_DEVICES)
@pytest.mark.parametrize('case', CASES, ids=_case_id)
def test_triton_block_end_matches_float64_reference(case, device):
    _check(*case, device=device)


#: The C++ block end (SA, SE, ECA after a BatchNorm on CPU): float32 and
#: float64, the layouts, planes shorter and longer than the kernels' 256
#: value chunks and their 16-lane tails, 1x1 planes, batch 1, mean 1e4.
CPU_CASES = [
    ('SA', 'train', F32, 'contiguous', (2, 32, 5, 7), True, 0.),
    ('SA', 'eval', F64, 'channels_last', (1, 32, 1, 1), True, 0.),
    ('SA', 'cumulative', F32, 'strided', (3, 32, 9, 11), True, 0.),
    ('SA', 'frozen', F32, 'contiguous', (2, 32, 3, 5), True, 1e4),
    ('SA', 'untracked', F64, 'strided', (2, 32, 17, 19), False, 0.),
    ('SA', 'train', F32, 'channels_last', (2, 32, 16, 20), True, 1e4),
    ('SE', 'train', F64, 'contiguous', (2, 32, 9, 7), True, 0.),
    ('SE', 'eval', F32, 'channels_last', (2, 32, 5, 7), True, 1e4),
    ('SE', 'untracked', F32, 'strided', (1, 32, 23, 29), False, 0.),
    ('SE', 'frozen', F32, 'contiguous', (3, 32, 1, 1), True, 0.),
    ('ECA', 'cumulative', F64, 'channels_last', (2, 32, 5, 7), True, 0.),
    ('ECA', 'train', F32, 'contiguous', (1, 32, 23, 29), True, 0.),
    ('ECA', 'frozen', F32, 'strided', (2, 32, 9, 7), True, 1e4),
    ('ECA', 'eval', F32, 'contiguous', (1, 32, 1, 1), False, 0.),
]

needs_cpu_kernel = pytest.mark.skipif(
    block_end_cpu_unsupported(torch.empty(1)) is not None,
    reason=f'{block_end_cpu_unsupported(torch.empty(1))}')


def _fused_cpu_calls():
    """A mock counting the C++ block end's calls (and running it)."""
    module = sys.modules['mmsa.ops.block_end']
    return mock.patch.object(module, 'block_end_cpu',
                             wraps=module.block_end_cpu)


#: (impl, device) of the tests both kernel families run: the Triton kernels
#: on each of KERNEL_DEVICES, the C++ kernels on CPU.
IMPL_DEVICES = [
    pytest.param('triton', p.values[0], marks=[needs_triton, *p.marks],
                 id=f'triton-{p.values[0]}') for p in KERNEL_DEVICES
] + [pytest.param('cpu', 'cpu', marks=needs_cpu_kernel, id='cpu')]


@needs_cpu_kernel
@pytest.mark.parametrize('case', CPU_CASES, ids=_case_id)
def test_cpu_block_end_matches_float64_reference(case):
    with _fused_cpu_calls() as fused:
        _check(*case, impl='cpu')
    assert fused.call_count == 1


@needs_cpu_kernel
@pytest.mark.parametrize('name', ['SA', 'SE', 'ECA'])
def test_auto_on_cpu_folds_a_batchnorm_into_the_cpu_kernels(name):
    """``impl='auto'`` on CPU: after a BatchNorm the C++ block end; SA
    without one its own kernel, SE and ECA the composition; a GroupNorm is
    not folded."""
    attention = randomize_(ATTENTION[name](16))
    z = torch.randn(2, 16, 5, 7)
    for norm, fused_runs in ((torch.nn.BatchNorm2d(16), 1), (None, 0),
                             (torch.nn.GroupNorm(4, 16), 0)):
        with _fused_cpu_calls() as fused:
            out = block_end(z, attention, norm, torch.randn_like(z))
        assert fused.call_count == fused_runs, norm
        assert out.shape == z.shape


@needs_triton
@pytest.mark.parametrize('device', KERNEL_DEVICES)
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
@pytest.mark.parametrize('name', ['SA', 'ECA'])
def test_triton_block_end_merges_moments_of_split_planes(layout, name,
                                                         device):
    """More programs wanted than planes: each plane's moments and sums come
    from several chunks, merged exactly (Chan's formula)."""
    from mmsa.ops import block_end_triton
    shape = (1, 8, 50, 51)
    p = shape[2] * shape[3]
    # (the plan cache is keyed by the programs wanted: both names patched)
    with mock.patch.object(support, 'programs_wanted', return_value=256), \
            mock.patch.object(block_end_triton, 'programs_wanted',
                              return_value=256):
        plan = support.plan_tiles(torch.device('cpu'), 1, 8, p,
                                  1 if layout == 'channels_last' else p)
        assert plan[2] > 1, plan  # the planes are split
        attention = {'SA': lambda c: ShuffleAttention(c, groups=2)}.get(
            name, ATTENTION[name])
        with mock.patch.dict(ATTENTION, {name: attention}):
            _check(name, 'train', F32, layout, shape, True, 0.,
                   device=device)


@needs_triton
@pytest.mark.parametrize('device', KERNEL_DEVICES)
def test_triton_block_end_with_int64_offsets_matches_reference(device):
    """The kernels' int64 path (taken where a tensor's address span passes
    int32) on a small tensor."""
    with mock.patch('mmsa.ops.block_end_triton.needs_int64',
                    return_value=True):
        _check('SA', 'train', F32, 'channels_last', (2, 32, 5, 7), True, 0.,
               device=device)


def test_int64_offsets_are_chosen_by_the_address_span():
    small = torch.empty(2, 3, 4, 5, device='meta')
    assert not support.needs_int64(small, None)
    assert not support.needs_int64(torch.empty(2**31, device='meta'))
    assert support.needs_int64(torch.empty(2**31 + 1, device='meta'))
    # a view of few elements whose last address passes int32
    strided = small.as_strided((2, 3, 4, 5), (2**31, 1, 5, 1))
    assert strided.numel() < 2**31 and support.needs_int64(strided)


@needs_triton
@pytest.mark.parametrize('channels_last', [False, True])
def test_element_wise_grid_is_one_axis_whatever_the_plane_size(
        channels_last):
    """CUDA's grid axes 1 and 2 stop at 65,535 programs: the element-wise
    kernels use axis 0 only, the reductions at most 64 splits on axis 1."""
    from mmsa.ops import block_end_triton
    z = torch.empty(1, 64, 2000, 1500, device='meta')
    if channels_last:
        z = z.contiguous(memory_format=torch.channels_last)
    plan = block_end_triton._plan(z, support.nc_p_strides(z)[1])
    assert len(plan.grid_tiles) == 1 and plan.grid_tiles[0] > 65535
    assert plan.grid_reduce[1] <= 64


@pytest.mark.parametrize('impl,device', IMPL_DEVICES)
@pytest.mark.parametrize('momentum', [0.1, None])
def test_running_statistics_match_torch_after_several_steps(momentum, impl,
                                                            device):
    """Three training steps, then eval: the running mean and (unbiased)
    variance, the batch count and the eval output equal torch's."""
    gen = torch.Generator().manual_seed(0)
    attention = randomize_(ShuffleAttention(16, groups=2), seed=1)
    norms = {}
    for path, dtype, dev in ((impl, F32, device),
                             ('reference', torch.float64, 'cpu')):
        att = copy.deepcopy(attention).to(dev, dtype)
        att.impl = path
        norm = torch.nn.BatchNorm2d(16, momentum=momentum).to(dev, dtype)
        gen.manual_seed(0)
        for _ in range(3):
            z = (torch.randn(2, 16, 5, 6, generator=gen) * 3 + 2).to(
                dev, dtype)
            block_end(z.requires_grad_(), att, norm,
                      torch.randn(z.shape, generator=gen).to(
                          dev, dtype)).sum().backward()
        norm.eval()
        z = torch.randn(2, 16, 5, 6, generator=gen).to(dev, dtype)
        norms[path] = (norm.cpu(), block_end(z, att, norm).detach().cpu())
    (got, out), (ref, ref_out) = norms[impl], norms['reference']
    assert got.num_batches_tracked.item() == 3
    for name in ('running_mean', 'running_var'):
        assert _error(getattr(got, name), getattr(ref, name), F32) <= 1e-6
    assert _error(out, ref_out, F32) <= 1e-5


@pytest.mark.parametrize('impl,device', IMPL_DEVICES)
def test_two_identical_calls_give_identical_bits(impl, device):
    gen = torch.Generator().manual_seed(0)
    attention = randomize_(ShuffleAttention(32, groups=4, impl=impl))
    attention.to(device)
    z = torch.randn(2, 32, 9, 11, generator=gen).to(device)
    idt = torch.randn(z.shape, generator=gen).to(device)

    def step():
        norm = randomize_(torch.nn.BatchNorm2d(32), 3).to(device)
        att = copy.deepcopy(attention)
        zz = z.clone().requires_grad_()
        out = block_end(zz, att, norm, idt)
        out.backward(torch.ones_like(out))
        return [out, zz.grad, norm.weight.grad, att.cweight.grad]

    for a, b in zip(step(), step()):
        assert torch.equal(a, b)


@pytest.mark.parametrize('impl,device', IMPL_DEVICES)
def test_block_end_saves_only_its_input_and_output(impl, device):
    """Saved for backward: z (which BN saves too) and the output (the ReLU's
    mask, which the next conv saves anyway), plus per-plane floats and the
    parameters; never x = BN(z) or another full tensor."""
    attention = randomize_(SqueezeExcitation(32, reduction=4, impl=impl))
    attention.to(device)
    norm = randomize_(torch.nn.BatchNorm2d(32)).to(device)
    z = torch.randn(2, 32, 9, 11, device=device, requires_grad=True)
    idt = torch.randn(z.shape, device=device, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t) or t, lambda t: t):
        out = block_end(z, attention, norm, idt)
    full = {t.untyped_storage().data_ptr() for t in saved
            if t.numel() == z.numel()}
    assert full == {z.untyped_storage().data_ptr(),
                    out.untyped_storage().data_ptr()}
    small = sum(t.numel() for t in saved if t.numel() < z.numel())
    assert small <= 4 * 2 * 32 + sum(p.numel() for p in
                                     attention.parameters())


@pytest.mark.parametrize('name,impl,device', [
    pytest.param(name, *p.values, marks=p.marks, id=f'{name}-{p.id}')
    for name in ('SA', 'CBAM') for p in IMPL_DEVICES
    if p.values[0] in ATTENTION[name](16).IMPLS  # CBAM: no C++ kernel
])
def test_double_backward_is_one_clear_error(name, impl, device):
    attention = randomize_(ATTENTION[name](16)).to(device)
    attention.impl = impl
    z = torch.randn(2, 16, 5, 7, device=device, requires_grad=True)
    norm = torch.nn.BatchNorm2d(16).to(device)
    out = block_end(z, attention, norm, torch.randn_like(z))
    with pytest.raises(RuntimeError, match=r"double backward.*"
                       r"impl='reference'"):
        torch.autograd.grad(out.square().sum(), z, create_graph=True)
    attention.impl = 'reference'  # the way out the message names
    out = block_end(z, attention, norm, torch.randn_like(z))
    dz, = torch.autograd.grad(out.square().sum(), z, create_graph=True)
    dz.sum().backward()
    assert z.grad is not None


# options that make each module small; every registered attention is here
OPTIONS = {
    'SA': dict(groups=4), 'SE': dict(reduction=4), 'ECA': dict(kernel_size=3),
    'CBAM': dict(reduction=4, kernel_size=3), 'SGE': dict(groups=4),
    'BAM': dict(reduction=4), 'ULSAM': dict(groups=4), 'LKA': dict(),
    'GC': dict(ratio=1 / 4), 'NonLocal': dict(reduction=4)
}


def _build(name: str, channels: int = 16, **options):
    try:
        module = build_attention(dict(type=name, **OPTIONS[name], **options),
                                 channels)
    except ImportError as err:  # GC / NonLocal without mmcv
        pytest.skip(str(err))
    return randomize_(module, seed=len(name)).eval()


def test_every_registered_attention_is_covered():
    assert set(ATTENTIONS) == set(OPTIONS)


@pytest.mark.parametrize('name', sorted(OPTIONS))
def test_block_end_of_any_attention_is_relu_of_output_plus_identity(name):
    """Every attention ends a block as ``relu(attention(norm(z)) +
    identity)``: the op's gradients are those of the composition."""
    module = _build(name)
    norm = randomize_(torch.nn.BatchNorm2d(16)).eval()
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 16, 6, 5, generator=gen)
    identity = torch.randn(z.shape, generator=gen)
    grad_out = torch.randn(z.shape, generator=gen)

    def run(fused):
        m = copy.deepcopy(module)
        zi = z.clone().requires_grad_()
        idt = identity.clone().requires_grad_()
        out = (block_end(zi, m, norm, idt) if fused else
               torch.relu(m(norm(zi)) + idt))
        out.backward(grad_out)
        return [out.detach(), zi.grad, idt.grad] + [
            p.grad for p in m.parameters()]

    for a, b in zip(run(True), run(False)):
        assert (a - b).abs().max() <= 1e-5 * max(1., b.abs().max().item())


@pytest.mark.parametrize('name', sorted(OPTIONS))
@pytest.mark.parametrize('shape,identity,message', [
    ((16, 6, 5), None, r'expected a 4-D input N x 16 x H x W, got 3-D'),
    ((1, 2, 16, 6, 5), None, r'got 5-D'),
    ((2, 8, 6, 5), None, r'expected 16 channels .* got an input of shape '
     r'\(2, 8, 6, 5\); build it with in_channels=8'),
    ((2, 16, 0, 5), None, r'no positions \(H x W = 0 x 5\)'),
    ((2, 16, 6, 5), (2, 16, 3, 5), r"identity shape \(2, 16, 3, 5\) differs "
     r"from the input's \(2, 16, 6, 5\)"),
])
def test_bad_input_is_one_clear_error_naming_the_module(name, shape, identity,
                                                        message):
    module = _build(name)
    with pytest.raises(ValueError, match=message) as info:
        if identity is None:
            module(torch.randn(shape))
        else:
            block_end(torch.randn(shape), module, None,
                      torch.randn(identity))
    assert type(module).__name__ in str(info.value)


def test_integer_input_is_one_clear_error():
    with pytest.raises(ValueError, match=r'SqueezeExcitation\(.*floating'
                       r'-point input, got torch.int64'):
        _build('SE')(torch.ones(1, 16, 2, 2, dtype=torch.long))


@pytest.mark.parametrize('name,impls', [
    ('SA', ['auto', 'triton', 'cpu', 'reference']),
    ('SE', ['auto', 'triton', 'cpu', 'reference']),
    ('SGE', ['auto', 'triton', 'reference']),
    ('BAM', ['auto', 'reference']),
])
def test_impl_names_are_each_modules_own(name, impls):
    for impl in impls:
        assert _build(name, impl=impl).impl == impl
    choices = ', '.join(repr(i) for i in impls)
    for wrong in ('tritn', 'cpu' if 'cpu' not in impls else 'cuda'):
        with pytest.raises(ValueError, match=rf"impl={wrong!r} is not a path "
                           rf"of this module; choose one of \[{choices}\]"):
            _build(name, impl=wrong)
    module = _build(name)
    module.impl = 'tritn'  # set later: refused at the next call
    with pytest.raises(ValueError, match=r"impl='tritn'"):
        block_end(torch.randn(2, 16, 6, 5), module)


def test_mmsa_impl_is_the_default_where_the_config_says_auto():
    sa, se, sge, bam = (_build(name) for name in ('SA', 'SE', 'SGE', 'BAM'))
    with mock.patch.dict(os.environ, {'MMSA_IMPL': 'reference'}):
        assert dispatch.resolve_impl(sa) == 'reference'
        sa.impl = 'cpu'  # a value written in the config wins
        assert dispatch.resolve_impl(sa) == 'cpu'
    with mock.patch.dict(os.environ, {'MMSA_IMPL': 'cpu'}):
        assert dispatch.resolve_impl(se) == 'cpu'
        # a module without that path keeps 'auto'
        assert dispatch.resolve_impl(sge) == 'auto'
        assert dispatch.resolve_impl(bam) == 'auto'
    with mock.patch.dict(os.environ, {'MMSA_IMPL': 'triton'}):
        assert dispatch.resolve_impl(se) == 'triton'
    with mock.patch.dict(os.environ, {'MMSA_IMPL': 'fast'}):
        with pytest.raises(ValueError, match=r"MMSA_IMPL='fast' is not a "
                           r"path name; choose one of \['auto', 'triton', "
                           r"'cpu', 'reference'\]"):
            se(torch.randn(2, 16, 6, 5))


@needs_triton
@pytest.mark.parametrize('attention', [dict(type='SA', groups=8),
                                       dict(type='SE', reduction=8)])
@pytest.mark.parametrize('train', [True, False])
def test_mmsa_impl_triton_runs_a_whole_backbone_in_the_kernels(attention,
                                                               train):
    """With ``MMSA_IMPL=triton`` every block of an AttnResNet-18 ends in the
    Triton kernels (BN folded in training and in eval); outputs, the input
    gradient and every parameter gradient equal the reference path's."""
    pytest.importorskip('mmdet')
    from mmsa.models.backbones.det_resnet import AttnResNet
    from mmsa.ops import block_end_triton
    torch.manual_seed(0)
    model = randomize_(AttnResNet(depth=18, attention=attention), seed=5)
    x = torch.randn(2, 3, 32, 48)

    def run(env):
        m = copy.deepcopy(model).train(train)
        xi = x.clone().requires_grad_()
        with mock.patch.dict(os.environ, {'MMSA_IMPL': env}), \
                mock.patch.object(block_end_triton, 'block_end_triton',
                                  wraps=block_end_triton.block_end_triton
                                  ) as kernels:
            outs = m(xi)
        sum((o * (i + 1)).mean() for i, o in enumerate(outs)).backward()
        grads = {n: p.grad for n, p in m.named_parameters()}
        return outs, xi.grad, grads, kernels.call_count, m

    outs, dx, grads, calls, m = run('triton')
    model.double()
    x = x.double()
    ref_outs, ref_dx, ref_grads, ref_calls, ref_m = run('reference')
    assert calls == 8 and ref_calls == 0  # one per block
    # 18 layers of float32 rounding against float64
    for a, b in zip(outs, ref_outs):
        assert _error(a.detach(), b.detach(), F32) <= 2e-4
    assert _error(dx, ref_dx, F32) <= 2e-4
    for name, ref in ref_grads.items():
        assert _error(grads[name], ref, F32) <= 2e-4, name
    if train:
        assert _error(m.layer2[0].bn2.running_var,
                      ref_m.layer2[0].bn2.running_var, F32) <= 1e-5


@needs_triton
@pytest.mark.skipif(not hasattr(torch.library, 'custom_op'),
                    reason='torch.library.custom_op needs torch >= 2.4')
@pytest.mark.parametrize('device', KERNEL_DEVICES)
@pytest.mark.parametrize('name', ['SA', 'ECA'])
def test_kernels_stay_one_op_under_torch_compile(name, device):
    """Under torch.compile (fullgraph) the block end is the custom op
    ``mmsa::block_end``, whose backward calls the kernels' ops too; the
    results and the running statistics equal eager's."""
    attention = randomize_(ATTENTION[name](16), seed=1)
    attention.impl = 'triton'
    norm = randomize_(torch.nn.BatchNorm2d(16), 2).train()
    graphs = []

    def backend(gm, inputs):
        graphs.append(str(gm.graph))
        return gm

    from torch._dynamo.backends.common import aot_autograd

    def run(compiled):
        att = copy.deepcopy(attention).to(device)
        bn = copy.deepcopy(norm).to(device)
        fn = (lambda z, i: block_end(z, att, bn, i))
        if compiled:
            torch._dynamo.reset()
            fn = torch.compile(fn, fullgraph=True, backend=aot_autograd(
                fw_compiler=backend, bw_compiler=backend))
        gen = torch.Generator().manual_seed(0)
        z = torch.randn(2, 16, 5, 7, generator=gen).to(device)
        idt = torch.randn(z.shape, generator=gen).to(device)
        z.requires_grad_()
        idt.requires_grad_()
        out = fn(z, idt)
        out.square().sum().backward()
        return [out, z.grad, idt.grad, bn.weight.grad, bn.running_var] + [
            p.grad for p in att.parameters()]

    got, ref = run(True), run(False)
    assert 'mmsa.block_end.default' in graphs[0]
    assert 'mmsa.block_end_sums.default' in graphs[1]
    assert 'mmsa.block_end_input_grads.default' in graphs[1]
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, atol=1e-6)


def _hw_swapped(shape, device):
    """A dense N x C x H x W tensor whose H and W do not fold into one axis
    (W's stride is H): the layout a compiler may hand an op."""
    n, c, h, w = shape
    return torch.randn(n, c, w, h, device=device).transpose(2, 3)


@needs_triton
@pytest.mark.skipif(not hasattr(torch.library, 'custom_op'),
                    reason='torch.library.custom_op needs torch >= 2.4')
@pytest.mark.parametrize('device', KERNEL_DEVICES)
@pytest.mark.parametrize('z_layout', ['contiguous', 'channels_last',
                                      'strided'])
@pytest.mark.parametrize('grad_layout', ['contiguous', 'channels_last',
                                         'hw_swapped'])
def test_custom_ops_fakes_give_the_real_outputs_layout(z_layout, grad_layout,
                                                       device):
    """The custom ops' fake implementations (what torch.compile plans with,
    and inductor asserts) give each output the shape, dtype and strides the
    kernels' host code allocates, whatever the layouts of z and of the
    output gradient (torch.library.opcheck)."""
    from mmsa.ops.block_end_compile import block_end_compiled  # noqa: F401
    gen = torch.Generator().manual_seed(0)
    shape = (2, 16, 5, 7)
    gate = randomize_(ShuffleAttention(16, groups=2), 1).plane_gate()
    params = [t.detach().to(device) for t in gate.params]
    z = _layout(torch.randn(shape, generator=gen).to(device), z_layout)
    idt = torch.randn(shape, generator=gen).to(device)
    norm = [torch.rand(16, generator=gen).to(device) + 0.5
            for _ in range(4)]
    checks = ('test_schema', 'test_faketensor')
    forward = (z, idt, *norm, params, gate.function, gate.eps, gate.shuffle,
               gate.uses_var, 2, 1e-5)
    torch.library.opcheck(torch.ops.mmsa.block_end.default, forward,
                          test_utils=checks)
    y, shift, mean, _ = torch.ops.mmsa.block_end.default(*forward)
    grad = (_hw_swapped(shape, device) if grad_layout == 'hw_swapped' else
            _layout(torch.randn(shape, generator=gen).to(device),
                    grad_layout))
    a, p, q, alpha, beta = (torch.rand(size, generator=gen).to(device)
                            for size in (16, (2, 16), (2, 16), (2, 16),
                                         (2, 16)))
    coefficients = (shift, mean, a, mean, p, q)
    torch.library.opcheck(torch.ops.mmsa.block_end_sums.default,
                          (grad, z, y, *coefficients, gate.shuffle),
                          test_utils=checks)
    for write_identity in (True, False):
        torch.library.opcheck(
            torch.ops.mmsa.block_end_input_grads.default,
            (grad, z, y, *coefficients, alpha, beta, gate.shuffle,
             write_identity), test_utils=checks)


@needs_triton
def test_kernels_step_aside_under_export():
    """ONNX export and tracing see the reference composition (standard ops
    they can translate), never a kernel."""
    sa = randomize_(ShuffleAttention(16, groups=2, impl='triton'))
    x = torch.randn(1, 16, 3, 3)
    traced = torch.jit.trace(sa, x, check_trace=False)
    assert 'triton' not in str(traced.inlined_graph).lower()
    assert torch.allclose(traced(x), sa(x), atol=1e-6)


@needs_triton
def test_fallback_is_logged_once_per_reason():
    """A CPU tensor outside the interpreter, or a triton too old: the
    reference runs and says why, once."""
    sa = randomize_(ShuffleAttention(16, groups=2, impl='triton'))
    cbam = randomize_(CBAM(16, reduction=4, kernel_size=3, impl='triton'))
    x = torch.randn(1, 16, 3, 3)
    for env, reason in (({'TRITON_INTERPRET': '0'}, 'run on CUDA'),
                        ({}, 'too old')):
        with mock.patch.dict('os.environ', env), \
                mock.patch.object(dispatch, '_LOGGED', set()), \
                mock.patch.object(dispatch, 'print_log') as log, \
                mock.patch.dict(support._STATE, clear=True):
            if reason == 'too old':
                import triton
                mock.patch.object(triton, '__version__', '2.0.0').start()
            try:
                out = sa(x)
                sa(x)
                cbam(x)
            finally:
                mock.patch.stopall()
        messages = [c.args[0] for c in log.call_args_list]
        assert len(messages) == 2, messages  # one for SA, one for CBAM
        assert all(reason in m for m in messages), messages
        sa.impl = 'reference'
        assert torch.equal(out, sa(x))
        sa.impl = 'triton'


@needs_triton
@pytest.mark.parametrize('device', KERNEL_DEVICES)
@pytest.mark.parametrize('dtype', [F16, BF16])
@pytest.mark.parametrize('groups', [1, 4])
def test_triton_gate_epilogue_half_precision(dtype, groups, device):
    """Half-precision input, float32 gates (autocast's mix): computed in
    float32, stored in the input's dtype; each gradient in its tensor's."""
    from mmsa.ops.triton_gate import gate_triton
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 3, 5, generator=gen)
    gc = torch.rand(2, 8, generator=gen)
    gs = torch.rand(2, groups, 3, 5, generator=gen)
    idt = torch.randn(x.shape, generator=gen)
    grad_out = torch.randn(x.shape, generator=gen)

    def run(fn, xdt, gdt, dev):
        ins = [t.detach().to(dev, dt).clone().requires_grad_()
               for t, dt in ((x, xdt), (gc, gdt), (gs, gdt), (idt, xdt))]
        out = fn(*ins)
        out.backward(grad_out.to(dev, out.dtype))
        return [t.cpu() for t in [out] + [t.grad for t in ins]]

    got = run(gate_triton, dtype, F32, device)
    ref = run(gate_reference, torch.float64, torch.float64, 'cpu')
    assert got[0].dtype == dtype and got[1].dtype == dtype
    assert got[2].dtype == F32
    for what, a, b in zip(('output', 'dx', 'd_gc', 'd_gs', 'd_identity'),
                          got, ref):
        assert _error(a, b, dtype) <= TOLERANCE[dtype], what


@needs_triton
@pytest.mark.parametrize('device', KERNEL_DEVICES)
def test_triton_gate_splits_channels_of_a_group_across_programs(device):
    """More programs wanted than (sample, group, p-block) triples: each
    group's channels are cut into chunks whose spatial-gate gradients are
    summed afterwards."""
    from mmsa.ops import triton_gate
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 64, 16, 17, generator=gen)
    gs = torch.rand(1, 2, 16, 17, generator=gen)
    gc = torch.rand(1, 64, generator=gen)
    grad_out = torch.randn(x.shape, generator=gen)

    def run(fn, dt, dev):
        ins = [t.detach().to(dev, dt).clone().requires_grad_()
               for t in (x, gc, gs)]
        fn(*ins).backward(grad_out.to(dev, dt))
        return [t.grad.cpu() for t in ins]

    with mock.patch.object(support, 'programs_wanted', return_value=256):
        assert triton_gate._plan(x, x.stride(1), 2)[3] > 1  # chunks
        got = run(triton_gate.gate_triton, F32, device)
    for a, b in zip(got, run(gate_reference, torch.float64, 'cpu')):
        assert _error(a, b, F32) <= TOLERANCE[F32]


SYNC_WORKER = textwrap.dedent('''
    import os
    import sys

    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp


    def worker(rank, out_dir, name, impl, device):
        cuda = device == 'cuda'
        os.environ['TRITON_INTERPRET'] = '0' if cuda else '1'
        if cuda:
            torch.cuda.set_device(rank)
            device = f'cuda:{rank}'
        dist.init_process_group(
            'nccl' if cuda else 'gloo',
            init_method=f'file://{out_dir}/store', rank=rank, world_size=2)
        from mmsa.attention import build_attention
        from mmsa.ops import block_end
        state = torch.load(f'{out_dir}/state.pth')
        attention = build_attention(dict(type=name, **state['options']), 16)
        attention.load_state_dict(state['attention'])
        attention.impl = impl
        attention.to(device)
        norm = torch.nn.SyncBatchNorm(16)
        norm.load_state_dict(state['norm'])
        norm.to(device)
        half = slice(2 * rank, 2 * rank + 2)
        z = state['z'][half].to(device).requires_grad_()
        identity = state['identity'][half].to(device).requires_grad_()
        out = block_end(z, attention, norm, identity)
        out.backward(state['grad'][half].to(device))
        grads = {'z': z.grad, 'identity': identity.grad}
        for prefix, module in (('attention', attention), ('norm', norm)):
            for n, p in module.named_parameters():
                g = p.grad.clone()
                dist.all_reduce(g)
                grads[f'{prefix}.{n}'] = g
        torch.save(dict(out=out.detach().cpu(),
                        grads={k: g.cpu() for k, g in grads.items()},
                        buffers={k: b.cpu()
                                 for k, b in norm.named_buffers()}),
                   f'{out_dir}/rank{rank}.pth')
        # both ranks done before either tears gloo down (a rank leaving
        # while the other still talks aborts it)
        dist.barrier()
        dist.destroy_process_group()


    if __name__ == '__main__':
        mp.spawn(worker, args=tuple(sys.argv[1:5]), nprocs=2)
''')


TWO_GPUS = [pytest.mark.cuda, pytest.mark.skipif(
    cuda_unavailable(2) is not None, reason=cuda_unavailable(2) or '')]
SYNC_CASES = [
    pytest.param(name, 'triton', 'cpu', marks=[needs_triton,
                                              *KERNEL_DEVICES[0].marks])
    for name in ('SA', 'SE')
] + [pytest.param(name, 'triton', 'cuda', marks=[needs_triton, *TWO_GPUS])
     for name in ('SA', 'SE')
     ] + [pytest.param('SA', 'cpu', 'cpu', marks=needs_cpu_kernel)]


@pytest.mark.parametrize('name,impl,device', SYNC_CASES)
def test_syncbn_over_two_processes_equals_bn_over_the_whole_batch(
        name, impl, device, tmp_path):
    """SyncBatchNorm folded into the kernels (``impl``), two processes with
    half a batch each (gloo on CPU, where torch's own SyncBatchNorm does not
    run; NCCL on two GPUs): outputs, every gradient (the parameters' summed over
    the ranks) and the running statistics equal one BatchNorm over the
    whole batch in float64."""
    gen = torch.Generator().manual_seed(0)
    attention = randomize_(ATTENTION[name](16), seed=1)
    norm = randomize_(torch.nn.BatchNorm2d(16), seed=2)
    z = torch.randn(4, 16, 5, 7, generator=gen) * 2 + 1
    identity = torch.randn(z.shape, generator=gen)
    grad = torch.randn(z.shape, generator=gen)
    torch.save(dict(options=OPTIONS[name], attention=attention.state_dict(),
                    norm=norm.state_dict(), z=z, identity=identity,
                    grad=grad), tmp_path / 'state.pth')
    script = tmp_path / 'worker.py'
    script.write_text(SYNC_WORKER)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(ROOT), os.environ.get('PYTHONPATH', '')])}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), name,
                           impl, device], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f'rank{r}.pth') for r in range(2)]
    ref = _run(attention, norm.train(), z.double(), identity.double(),
               grad.double(), 'reference', torch.float64)
    got = (torch.cat([r['out'] for r in ranks]), {
        name: torch.cat([r['grads'][name] for r in ranks])
        if name in ('z', 'identity') else ranks[0]['grads'][name]
        for name in ranks[0]['grads']}, ranks[0]['buffers'])
    _assert_matches(got, ref, F32)
    assert torch.equal(ranks[0]['buffers']['running_var'],
                       ranks[1]['buffers']['running_var'])


@needs_triton
def test_gate_epilogue_refuses_gates_of_the_wrong_shape():
    from mmsa.ops.triton_gate import gate_triton
    x = torch.randn(2, 12, 3, 5)
    with pytest.raises(ValueError, match=r'channel gate has shape \(2, 8\)'):
        gate_triton(x, torch.rand(2, 8), None)
    with pytest.raises(ValueError, match=r'G dividing C = 12'):
        gate_triton(x, None, torch.rand(2, 5, 3, 5))


# What only a GPU shows.

# 1 x 64 planes of 4096 x 8200: 2,149,580,800 elements, offsets past int32
# from the last plane's 31.5 millionth value on
BIG = (1, 64, 4096, 8200)
BOUNDARY = 2**31


def _free_gb() -> float:
    return torch.cuda.mem_get_info()[0] / 1e9


@pytest.fixture
def most_of_the_gpu():
    """Skips unless 36 GB of the GPU are free; afterwards gives back what
    the test's tensors took (other pytest-xdist processes share the GPU)."""
    torch.cuda.empty_cache()
    if _free_gb() < 36:
        pytest.skip(f'needs 36 GB of free GPU memory, {_free_gb():.0f} free')
    yield
    gc.collect()
    torch.cuda.empty_cache()


def _window(flat: int, plane: int, width: int = 4096) -> tuple:
    """(plane index, positions) of ``width`` values around flat index
    ``flat`` of a contiguous 1 x C x H x W tensor, inside its plane."""
    index, pos = divmod(flat, plane)
    start, stop = max(0, pos - width // 2), min(plane, pos + width // 2)
    return index, torch.arange(start, stop, device='cuda')


def _shuffled(c: int, channels: int, groups: int) -> int:
    """The output channel of input channel ``c`` (the kernels' shuffle)."""
    per = channels // groups
    return (c % per) * groups + c // per


@cuda_test()
@pytest.mark.xdist_group('most_of_the_gpu_memory')
def test_block_end_past_2_31_elements_in_bfloat16(most_of_the_gpu):
    """A bfloat16 block end of 2.15e9 elements: the kernels' int64 offsets,
    SA with a BatchNorm in eval whose affine learns (mmdet's norm_eval), so
    that each output plane depends on its input plane alone. Around element
    2^31 and at the end of the tensor, the output, the input's and the
    identity's gradients and BN's weight gradient equal a float64
    reference of that one plane (not a copy of the whole)."""
    from mmsa.ops import PLANE_GATES
    torch.manual_seed(0)
    n, c, h, w = BIG
    plane = h * w
    sa = randomize_(ShuffleAttention(c, groups=4, impl='triton'), 1).cuda()
    norm = randomize_(torch.nn.BatchNorm2d(c), 2).cuda().eval()
    z = torch.randn(BIG, device='cuda', dtype=BF16, requires_grad=True)
    idt = torch.randn(BIG, device='cuda', dtype=BF16, requires_grad=True)
    assert support.needs_int64(z)
    out = block_end(z, sa, norm, idt)
    grad = torch.randn_like(out)
    out.backward(grad)
    gate = sa.plane_gate()
    params = [t.detach().double() for t in gate.params]
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    shift = norm.running_mean.double()

    def x_of(k, weight=None):  # the BN output of plane k, float64
        weight = norm.weight[k].double() if weight is None else weight
        return (z[0, k].detach().double().flatten() - shift[k]) * \
            scale[k] * weight + norm.bias[k].double()

    means = torch.stack([x_of(k).mean() for k in range(c)])[None]
    var = torch.stack([x_of(k).var(unbiased=False) for k in range(c)])[None]
    for flat in (BOUNDARY, out.numel() - 1):
        # the output around it, from its input plane
        oc, pos = _window(flat, plane)
        k = next(i for i in range(c)
                 if _shuffled(i, c, gate.shuffle) == oc)
        weight = norm.weight[k].detach().double().requires_grad_()
        zk = z[0, k].detach().double().flatten().requires_grad_()
        x = (zk - shift[k]) * scale[k] * weight + norm.bias[k].double()
        m, v = means.clone(), var.clone()
        m[0, k], v[0, k] = x.mean(), x.var(unbiased=False)
        p, q = PLANE_GATES[gate.function](m, v, params, gate.eps)
        pre = x * torch.sigmoid(p[0, k] * (x - m[0, k]) + q[0, k]) + \
            idt[0, oc].double().flatten()
        got = out[0, oc].flatten()
        mask = got > 0  # the kernel's ReLU mask (rounding may flip a kink)
        ref = torch.where(mask, pre, 0.)
        err = (got[pos].double() - ref[pos]).abs()
        assert (err <= 4e-3 * ref[pos].abs() + 1e-4).all(), err.max()
        assert torch.equal(idt.grad[0, oc].flatten()[pos],
                           torch.where(mask, grad[0, oc].flatten(), 0)[pos])
        dz, dw = torch.autograd.grad(ref, [zk, weight],
                                     grad[0, oc].double().flatten())
        got_dz = z.grad[0, k].flatten()[pos].double()
        assert _error(got_dz, dz[pos], F32) <= 1e-2
        assert _error(norm.weight.grad[k], dw, F32) <= 1e-3


@cuda_test()
@pytest.mark.xdist_group('most_of_the_gpu_memory')
def test_gate_epilogue_past_2_31_elements_in_bfloat16(most_of_the_gpu):
    """The gate epilogue (SGE's and CBAM's end) on 2.15e9 bfloat16 values:
    around element 2^31 and at the end, the output and the input's, the
    identity's and both gates' gradients equal float64 references."""
    from mmsa.ops.triton_gate import gate_triton
    torch.manual_seed(0)
    n, c, h, w = BIG
    plane, groups = h * w, 4
    x = torch.randn(BIG, device='cuda', dtype=BF16, requires_grad=True)
    idt = torch.randn(BIG, device='cuda', dtype=BF16, requires_grad=True)
    gc = torch.rand(n, c, device='cuda', requires_grad=True)
    gs = torch.rand(n, groups, h, w, device='cuda', requires_grad=True)
    out = gate_triton(x, gc, gs, idt)
    grad = torch.randn_like(out)
    out.backward(grad)
    for flat in (BOUNDARY, out.numel() - 1):
        k, pos = _window(flat, plane)
        grp, per = k // (c // groups), c // groups
        xk = x[0, k].detach().flatten().double()
        gsk = gs[0, grp].detach().flatten().double()
        got = out[0, k].flatten()
        mask = got > 0
        g = torch.where(mask, grad[0, k].flatten(), 0).double()
        ref = torch.where(mask, xk * gc[0, k].double() * gsk +
                          idt[0, k].flatten().double(), 0.)
        err = (got[pos].double() - ref[pos]).abs()
        assert (err <= 4e-3 * ref[pos].abs() + 1e-4).all(), err.max()
        assert torch.equal(idt.grad[0, k].flatten()[pos], g[pos].to(BF16))
        dx = g * gc[0, k].double() * gsk
        assert _error(x.grad[0, k].flatten()[pos].double(), dx[pos],
                      F32) <= 1e-2
        assert _error(gc.grad[0, k], (g * xk * gsk).sum(), F32) <= 1e-3
        d_gs = torch.zeros(len(pos), device='cuda', dtype=torch.float64)
        for j in range(grp * per, (grp + 1) * per):
            yj = out[0, j].flatten()[pos]
            gj = torch.where(yj > 0, grad[0, j].flatten()[pos], 0).double()
            d_gs += gj * x[0, j].flatten()[pos].double() * gc[0, j].double()
        assert _error(gs.grad[0, grp].flatten()[pos], d_gs, F32) <= 1e-3


@cuda_test()
@pytest.mark.parametrize('name', ['SA', 'ECA', 'CBAM', 'SGE'])
def test_planes_past_2_21_positions_in_channels_last(name):
    """Planes of 2.25 million positions (past 2^21) in channels_last, BN
    in training: everything equals the float64 reference (on the GPU)."""
    _check(name, 'train', F32, 'channels_last', (2, 16, 1500, 1500), True,
           0., device='cuda', ref_device='cuda', tolerance=1e-4)


@cuda_test(gpus=2)
@pytest.mark.parametrize('name', ['SA', 'SE', 'CBAM'])
def test_input_on_the_second_gpu(name):
    """An input on cuda:1 while cuda:0 is the current device: the kernels
    launch on the input's GPU (eager and compiled), and equal the float64
    reference."""
    assert torch.cuda.current_device() == 0
    _check(name, 'train', F32, 'contiguous', (2, 32, 9, 11), True, 0.,
           device='cuda:1')
    if name == 'CBAM' or not hasattr(torch.library, 'custom_op'):
        return  # the gate epilogue leaves torch.compile to the reference
    attention = randomize_(ATTENTION[name](32), seed=1).to('cuda:1')
    attention.impl = 'triton'
    norm = randomize_(torch.nn.BatchNorm2d(32), 2).to('cuda:1').train()
    z = torch.randn(2, 32, 9, 11, device='cuda:1', requires_grad=True)
    idt = torch.randn_like(z)
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b: block_end(a, attention, norm, b),
                             backend='aot_eager', fullgraph=True)
    out = compiled(z, idt)
    out.sum().backward()
    eager = block_end(z.detach(), attention, copy.deepcopy(norm), idt)
    assert out.device == z.device
    assert _error(out.detach().cpu(), eager.cpu(), F32) <= 1e-5


@cuda_test()
@pytest.mark.parametrize('name', ['SA', 'SE', 'ECA', 'CBAM', 'SGE'])
def test_kernels_give_identical_bits_twice_at_a_resnet_stage(name):
    """Two identical forward and backward passes at the first stage of the
    detectors' ResNet (planes split across programs) give the same bits:
    the kernels use no atomics (cuDNN set deterministic for the gates'
    own convolutions)."""
    gen = torch.Generator().manual_seed(0)
    attention = randomize_(ATTENTION[name](256), seed=1).cuda()
    attention.impl = 'triton'
    z = torch.randn(2, 256, 200, 336, generator=gen).cuda()
    idt = torch.randn(z.shape, generator=gen).cuda()
    grad = torch.randn(z.shape, generator=gen).cuda()

    def step():
        norm = randomize_(torch.nn.BatchNorm2d(256), 3).cuda()
        att = copy.deepcopy(attention)
        zz, ii = z.clone().requires_grad_(), idt.clone().requires_grad_()
        out = block_end(zz, att, norm, ii)
        out.backward(grad)
        return [out, zz.grad, ii.grad, norm.weight.grad, norm.bias.grad,
                norm.running_var] + [p.grad for p in att.parameters()]

    deterministic = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        first, second = step(), step()
    finally:
        torch.backends.cudnn.deterministic = deterministic
    for a, b in zip(first, second):
        assert torch.equal(a, b)
