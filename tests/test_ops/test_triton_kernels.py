"""The Triton kernels against the reference compositions.

The kernels run under Triton's interpreter on CPU tensors (tests/conftest.py
sets ``TRITON_INTERPRET=1`` before anything imports them), so the same
kernel code that runs on CUDA is checked here: forward, input gradient,
parameter and gate gradients and the identity's gradient, against the
reference run in float64 on the same values. Shapes are small (the
interpreter runs each program in Python) but awkward: H*W not a multiple of
the block, 1x1 planes, batch 1, 1 to 64 groups, channels_last and
non-contiguous inputs, planes split across programs.
"""
import copy
from unittest import mock

import pytest
import torch
from testing_utils import randomize_

import mmsa.ops.dispatch as dispatch
import mmsa.ops.triton_support as support
from mmsa.attention import (CBAM, EfficientChannelAttention,
                            ShuffleAttention, SpatialGroupEnhance,
                            SqueezeExcitation)
from mmsa.ops import apply_gates, apply_shuffle_attention, gate_reference

pytestmark = pytest.mark.skipif(
    support.triton_unavailable() is not None,
    reason=f'Triton cannot run here: {support.triton_unavailable()}')

# dtype -> relative tolerance against float64 (the kernels compute in
# float32 and store in the input's dtype)
TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest deviation relative to the scale of the expected tensor."""
    diff = (actual.double() - expected).abs().max().item()
    return diff / max(1., expected.abs().max().item())


def _norm_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Error norm relative to the expected norm: for half precision, where
    a ReLU mask can flip at values that round to 0."""
    return ((actual.double() - expected).norm() /
            expected.norm().clamp_min(1e-12)).item()


def _assert_matches(actual, expected, dtype, what):
    if dtype == torch.float32:
        err = _relative_error(actual, expected)
    else:
        err = _norm_error(actual, expected)
    assert err <= TOLERANCE[dtype], f'{what}: error {err:.3g} ({dtype})'


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == 'channels_last':
        return x.contiguous(memory_format=torch.channels_last)
    if layout == 'strided':  # every other column of a wider tensor
        wide = torch.zeros(*x.shape[:3], 2 * x.shape[3], dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x.contiguous()


def _run(module, x, identity, grad_out, impl):
    """Forward with ``impl`` (SA: the path it reports must be that one),
    backward of ``grad_out``: output, input, parameter and identity
    gradients."""
    module.impl = impl
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    idt = None if identity is None else identity.detach().clone(
    ).requires_grad_()
    out = module(x, identity=idt)
    out.backward(grad_out.to(out.dtype))
    assert getattr(module, 'path', impl) == impl
    grads = {n: p.grad for n, p in module.named_parameters()}
    return out.detach(), x.grad, grads, None if idt is None else idt.grad


def _check_sa(shape, groups, dtype=torch.float32, layout='contiguous',
              residual=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sa = randomize_(ShuffleAttention(shape[1], groups=groups), seed=seed + 1)
    x = torch.randn(shape, generator=gen) * 2 + 1
    res = torch.randn(shape, generator=gen) if residual else None
    grad_out = torch.randn(shape, generator=gen)
    out, dx, grads, dres = _run(
        copy.deepcopy(sa).to(dtype), _layout(x.to(dtype), layout),
        None if res is None else _layout(res.to(dtype), layout), grad_out,
        'triton')
    ref_out, ref_dx, ref_grads, ref_dres = _run(
        copy.deepcopy(sa).double(), x.double(),
        None if res is None else res.double(), grad_out.double(),
        'reference')
    assert out.dtype == dtype and dx.dtype == dtype
    if layout == 'channels_last':
        assert out.is_contiguous(memory_format=torch.channels_last)
    _assert_matches(out, ref_out, dtype, 'output')
    _assert_matches(dx, ref_dx, dtype, 'input gradient')
    for name, ref in ref_grads.items():
        _assert_matches(grads[name], ref, dtype, f'{name} gradient')
    if residual:
        _assert_matches(dres, ref_dres, dtype, 'identity gradient')


@pytest.mark.parametrize('shape,groups', [
    ((2, 32, 5, 7), 4),  # H*W = 35: a partial block
    ((1, 16, 1, 1), 2),  # 1x1 planes, batch 1
    ((3, 4, 3, 2), 1),  # one group
    ((1, 128, 3, 2), 64),  # 64 groups, k = 1
])
@pytest.mark.parametrize('residual', [False, True])
def test_triton_sa_matches_reference_float32(shape, groups, residual):
    _check_sa(shape, groups, residual=residual)


@pytest.mark.parametrize('layout', ['channels_last', 'strided'])
def test_triton_sa_reads_channels_last_and_strided_input(layout):
    _check_sa((2, 32, 5, 6), 4, layout=layout, residual=True)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
def test_triton_sa_half_precision_computes_in_float32(dtype, layout):
    _check_sa((2, 32, 5, 7), 4, dtype=dtype, layout=layout, residual=True)


@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
def test_triton_sa_merges_statistics_of_split_planes(layout):
    """More programs wanted than planes: each plane's statistics and sums
    come from several chunks, merged exactly (Chan's formula)."""
    shape = (1, 4, 50, 51)
    p = shape[2] * shape[3]
    with mock.patch.object(support, 'programs_wanted', return_value=256):
        plan = support.plan_tiles(torch.device('cpu'), 1, 4, p,
                                  1 if layout == 'channels_last' else p)
        assert plan[2] > 1, plan  # the planes are split
        _check_sa(shape, 1, layout=layout, residual=True)


def test_triton_sa_stays_accurate_far_from_zero_mean():
    """Planes of mean 1e4 and std 1: statistics merged per tile about the
    tile mean and gates taken about the plane mean keep float32 at 1e-5 of
    the float64 reference (sums about zero would cancel)."""
    gen = torch.Generator().manual_seed(0)
    sa = randomize_(ShuffleAttention(16, groups=2), seed=3)
    x = torch.randn(2, 16, 9, 7, generator=gen) + 1e4
    grad_out = torch.randn(x.shape, generator=gen)
    out, dx, grads, _ = _run(copy.deepcopy(sa), x, None, grad_out, 'triton')
    ref_out, ref_dx, ref_grads, _ = _run(
        copy.deepcopy(sa).double(), x.double(), None, grad_out.double(),
        'reference')
    # out = x * gate with x ~ 1e4: an error of 1e-2 is a gate error of 1e-6
    assert (out.double() - ref_out).abs().max() <= 1e-2
    _assert_matches(dx, ref_dx, torch.float32, 'input gradient')
    for name, ref in ref_grads.items():
        _assert_matches(grads[name], ref, torch.float32, name)


def test_triton_sa_under_autocast_keeps_the_input_dtype():
    """AMP: the block's tensors are half, the parameters float32; the output
    and the input gradient are half, the parameter gradients float32."""
    sa = randomize_(ShuffleAttention(32, groups=4, impl='triton'), seed=2)
    x = torch.randn(2, 32, 5, 7, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = sa(x, identity=torch.randn_like(x))
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16 and x.grad.dtype == torch.bfloat16
    assert all(p.grad.dtype == torch.float32 for p in sa.parameters())


GATE_MODULES = {
    'SE': lambda c: SqueezeExcitation(c, reduction=4),
    'ECA': lambda c: EfficientChannelAttention(c, kernel_size=3),
    'SGE': lambda c: SpatialGroupEnhance(c, groups=4),
    'CBAM': lambda c: CBAM(c, reduction=4, kernel_size=3),
}


@pytest.mark.parametrize('name', sorted(GATE_MODULES))
@pytest.mark.parametrize('layout,identity', [('contiguous', True),
                                             ('contiguous', False),
                                             ('channels_last', True)])
def test_triton_gate_modules_match_reference(name, layout, identity):
    """Each gating module with the Triton epilogue: output, input gradient,
    every parameter's gradient (through the gates) and the identity's,
    against the same module's reference path in float64."""
    gen = torch.Generator().manual_seed(1)
    module = randomize_(GATE_MODULES[name](16), seed=4).eval()
    x = torch.randn(2, 16, 5, 7, generator=gen)
    idt = torch.randn(x.shape, generator=gen) if identity else None
    grad_out = torch.randn(x.shape, generator=gen)
    out, dx, grads, didt = _run(
        copy.deepcopy(module), _layout(x, layout),
        None if idt is None else _layout(idt, layout), grad_out, 'triton')
    ref_out, ref_dx, ref_grads, ref_didt = _run(
        copy.deepcopy(module).double(), x.double(),
        None if idt is None else idt.double(), grad_out.double(), 'reference')
    if layout == 'channels_last':
        assert out.is_contiguous(memory_format=torch.channels_last)
    _assert_matches(out, ref_out, torch.float32, 'output')
    _assert_matches(dx, ref_dx, torch.float32, 'input gradient')
    for pname, expected in ref_grads.items():
        _assert_matches(grads[pname], expected, torch.float32, pname)
    if identity:
        _assert_matches(didt, ref_didt, torch.float32, 'identity gradient')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('groups', [1, 4])
def test_triton_gate_epilogue_half_precision(dtype, groups):
    """Half-precision input, float32 gates (autocast's mix): computed in
    float32, stored in the input's dtype; each gradient in its tensor's."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 3, 5, generator=gen)
    gc = torch.rand(2, 8, generator=gen)
    gs = torch.rand(2, groups, 3, 5, generator=gen)
    idt = torch.randn(x.shape, generator=gen)
    grad_out = torch.randn(x.shape, generator=gen)

    def run(impl, xdt, gdt):
        ins = [t.detach().to(dt).clone().requires_grad_()
               for t, dt in ((x, xdt), (gc, gdt), (gs, gdt), (idt, xdt))]
        out = apply_gates(*ins, impl=impl)
        out.backward(grad_out.to(out.dtype))
        return [out] + [t.grad for t in ins]

    got = run('triton', dtype, torch.float32)
    ref = run('reference', torch.float64, torch.float64)
    assert got[0].dtype == dtype and got[1].dtype == dtype
    assert got[2].dtype == torch.float32
    for what, a, b in zip(('output', 'dx', 'd_gc', 'd_gs', 'd_identity'),
                          got, ref):
        _assert_matches(a, b, dtype, what)


def test_triton_gate_splits_channels_of_a_group_across_programs():
    """More programs wanted than (sample, group, p-block) triples: each
    group's channels are cut into chunks whose spatial-gate gradients are
    summed afterwards."""
    from mmsa.ops import triton_gate
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 64, 16, 17, generator=gen)
    gs = torch.rand(1, 2, 16, 17, generator=gen)
    gc = torch.rand(1, 64, generator=gen)
    grad_out = torch.randn(x.shape, generator=gen)

    def run(impl, dt):
        ins = [t.detach().to(dt).clone().requires_grad_()
               for t in (x, gc, gs)]
        apply_gates(*ins, impl=impl).backward(grad_out.to(dt))
        return [t.grad for t in ins]

    with mock.patch.object(support, 'programs_wanted', return_value=256):
        assert triton_gate._plan(x, x.stride(1), 2)[3] > 1  # chunks
        got = run('triton', torch.float32)
    for a, b in zip(got, run('reference', torch.float64)):
        _assert_matches(a, b, torch.float32, 'gradient')


def test_gate_reference_follows_the_input_dtype_and_layout():
    x = torch.randn(2, 8, 3, 5).to(torch.bfloat16).contiguous(
        memory_format=torch.channels_last)
    out = gate_reference(x, torch.rand(2, 8), torch.rand(2, 2, 3, 5),
                         torch.randn(2, 8, 3, 5, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_triton_path_falls_back_with_one_log_line_per_reason():
    """A CPU tensor outside the interpreter, or a triton too old: the
    reference runs and says why once; the result is the reference's."""
    sa = randomize_(ShuffleAttention(16, groups=2, impl='triton'))
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
                apply_gates(x, torch.rand(1, 16), impl='triton')
            finally:
                mock.patch.stopall()
        assert sa.path == 'reference'
        messages = [c.args[0] for c in log.call_args_list]
        assert len(messages) == 2, messages  # one for SA, one for the gate
        assert all(reason in m for m in messages), messages
        ref = apply_shuffle_attention(x, 2, *sa.parameters(),
                                      impl='reference')[0]
        assert torch.equal(out, ref)


def test_kernels_step_aside_under_export_and_compile():
    """ONNX export / tracing and torch.compile see the reference
    composition (standard ops they can translate), never a kernel."""
    sa = randomize_(ShuffleAttention(16, groups=2, impl='triton'))
    x = torch.randn(1, 16, 3, 3)
    import mmsa.ops.shuffle_attention as sa_ops
    with mock.patch.object(sa_ops, 'is_exporting', return_value=True):
        out, path = apply_shuffle_attention(x, 2, *sa.parameters(),
                                            impl='triton')
    assert path == 'reference'
    traced = torch.jit.trace(sa, x, check_trace=False)
    assert 'triton' not in str(traced.inlined_graph).lower()
    assert torch.allclose(traced(x), out, atol=1e-6)


def test_sa_mismatched_identity_is_one_clear_error():
    sa = ShuffleAttention(16, groups=2, impl='triton')
    with pytest.raises(ValueError, match=r'residual shape \(1, 16, 2, 2\)'):
        sa(torch.randn(1, 16, 3, 3), identity=torch.randn(1, 16, 2, 2))


@pytest.mark.parametrize('attention', [dict(type='SA', groups=8),
                                       dict(type='SE', reduction=8)])
def test_triton_block_ends_match_reference_in_resnet18(attention):
    """A whole AttnResNet-18 whose blocks end in the Triton kernels (gate or
    SA, residual add, ReLU in one pass): outputs, the input gradient and
    every parameter gradient equal the reference path's."""
    pytest.importorskip('mmdet')
    from mmsa.models.backbones.det_resnet import AttnResNet
    torch.manual_seed(0)
    model = randomize_(AttnResNet(depth=18, attention=attention), seed=5)
    x = torch.randn(2, 3, 32, 48)

    def run(impl):
        m = copy.deepcopy(model).train()
        for module in m.modules():
            if hasattr(module, 'impl'):
                module.impl = impl
        xi = x.clone().requires_grad_()
        outs = m(xi)
        sum((o * (i + 1)).mean() for i, o in enumerate(outs)).backward()
        return outs, xi.grad, {n: p.grad for n, p in m.named_parameters()}

    outs, dx, grads = run('triton')
    ref_outs, ref_dx, ref_grads = run('reference')
    for a, b in zip(outs, ref_outs):
        assert _relative_error(a.detach(), b.detach().double()) <= 1e-4
    assert _relative_error(dx, ref_dx.double()) <= 1e-4
    for name, ref in ref_grads.items():
        assert _relative_error(grads[name], ref.double()) <= 1e-4, name
