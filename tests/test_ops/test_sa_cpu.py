"""SA's C++ CPU kernel against the official forward and the reference."""
import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from testing_utils import assert_close, official_sa, ops_run, randomize_

import mmsa.ops.dispatch as dispatch
import mmsa.ops.sa_cpu_kernel as sa_ops
from mmsa.attention import ShuffleAttention
from mmsa.ops import block_end, sa_cpu, sa_cpu_unsupported

needs_kernel = pytest.mark.skipif(
    sa_ops._ext is None,
    reason='SA CPU kernel not built (pip install --no-build-isolation -e .)')

PARAM_NAMES = ('cweight', 'cbias', 'sweight', 'sbias', 'gn.weight', 'gn.bias')

# (shape, groups): batch 1, odd and non-square H/W, a one-pixel-wide plane,
# ResNet-like widths. The kernel's forward walks planes under 4 KiB in
# output order and larger ones (25x42 here) in input order. (1x1 planes,
# where GroupNorm's variance is 0 and both float32 paths carry ~1e-5
# relative rounding error, are checked in float64.)
CASES = [((1, 64, 7, 7), 8), ((2, 128, 5, 9), 64), ((3, 256, 13, 4), 16),
         ((2, 32, 3, 1), 4), ((1, 512, 25, 42), 64)]


def _run(sa, x, impl, grad_out=None):
    """SA forward and backward by ``impl``; the C++ kernel must run exactly
    where ``impl`` is ``'cpu'``."""
    sa.impl = impl
    sa.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    got = []
    ran = ops_run(lambda: got.append(sa(x)))
    out = got[0]
    assert ('mmsa::sa_fused' in ran) == (impl == 'cpu'), ran
    if grad_out is None:
        grad_out = torch.randn(out.shape, dtype=out.dtype,
                               generator=torch.Generator().manual_seed(1))
    out.backward(grad_out)
    grads = {n: p.grad for n, p in sa.named_parameters()}
    return out.detach(), x.grad, grads


def _official(sa, x):
    return official_sa(x, sa.groups, sa.cweight, sa.cbias, sa.sweight,
                       sa.sbias, sa.gn.weight, sa.gn.bias)


def _tolerance(t: torch.Tensor) -> float:
    return 1e-5 * max(1., t.abs().max().item())


def _assert_fused_matches_float64(sa, x, grad_out, out_atol=None):
    """The fused float32 output, dx and parameter gradients against the
    reference run in float64 on the same values; the output within
    ``out_atol`` (default: the 1e-5 tolerance), the rest within 1e-5."""
    out, dx, grads = _run(sa, x, 'cpu', grad_out)
    sa64 = copy.deepcopy(sa).double()
    ref_out, ref_dx, ref_grads = _run(sa64, x.double(), 'reference',
                                      grad_out.double())
    assert_close(out.double(), ref_out,
                 atol=_tolerance(ref_out) if out_atol is None else out_atol)
    assert_close(dx.double(), ref_dx, atol=_tolerance(ref_dx))
    for name in PARAM_NAMES:
        assert_close(grads[name].double(), ref_grads[name],
                     atol=_tolerance(ref_grads[name]))


@needs_kernel
@pytest.mark.parametrize('shape,groups', CASES)
@pytest.mark.parametrize('channels_last', [False, True])
def test_fused_forward_and_grads_match_reference(shape, groups,
                                                 channels_last):
    sa = randomize_(ShuffleAttention(shape[1], groups=groups), seed=shape[2])
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 2 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ref_out, ref_dx, ref_grads = _run(sa, x, 'reference')
    out, dx, grads = _run(sa, x, 'cpu')
    assert_close(out, ref_out, atol=_tolerance(ref_out))
    assert_close(dx, ref_dx, atol=_tolerance(ref_dx))
    assert set(grads) == set(PARAM_NAMES)
    for name in PARAM_NAMES:
        assert grads[name].shape == ref_grads[name].shape
        assert_close(grads[name], ref_grads[name],
                     atol=_tolerance(ref_grads[name]))


@needs_kernel
@pytest.mark.parametrize('shape', [(2, 64, 16, 16), (1, 64, 25, 42)])
def test_fused_float32_stays_accurate_far_from_zero_mean(shape):
    """Planes of mean 1e4 and std 1: the kernel takes its gates and sums
    about each plane's mean, so float32 keeps the gates to ~1e-6 and the
    gradients to 1e-5 of the float64 reference (about 0 they cancel)."""
    sa = randomize_(ShuffleAttention(64, groups=8), seed=3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen) + 1e4
    grad_out = torch.randn(shape, generator=gen)
    # out = x * gate with x ~ 1e4: 1e-2 is a gate error of 1e-6
    _assert_fused_matches_float64(sa, x, grad_out, out_atol=1e-2)


@needs_kernel
@pytest.mark.parametrize('first', [0.5, 300.])
def test_fused_float32_variance_whatever_the_first_value(first):
    """The kernel sums x - x[0] and (x - x[0])^2 in one pass and takes the
    variance from them when x[0] lies near the mean (0.5 std off here); an
    outlier at x[0] (300 std off: the one-pass variance would cancel
    ~1000-fold) sends it to a second pass about the mean. Each path
    against float64."""
    shape = (2, 64, 25, 42)
    sa = randomize_(ShuffleAttention(64, groups=8), seed=5)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen) + 3
    x[:, :, 0, 0] = 3 + first
    grad_out = torch.randn(shape, generator=gen)
    _assert_fused_matches_float64(sa, x, grad_out)


@needs_kernel
@pytest.mark.parametrize('where', [0, 5])
def test_fused_forward_keeps_inf_as_the_official_code_does(where):
    """An inf in a channel-half plane makes its mean inf and its gate 0 or
    1: the other values of the plane stay finite and equal to the official
    forward's, wherever in the plane the inf sits. (At the inf itself the
    official code gives inf * 0 = NaN where the kernel's gate, which
    saturates at ~4e-39 rather than 0, gives inf.)"""
    sa = randomize_(ShuffleAttention(64, groups=8), seed=4)
    x = torch.randn(1, 64, 4, 4, generator=torch.Generator().manual_seed(0))
    # channel 0: channel half, and the shuffle leaves it in place
    x.view(1, 64, -1)[0, 0, where] = float('inf')
    with torch.no_grad():
        ref = _official(sa, x)
        sa.impl = 'cpu'
        out = sa(x)
    finite = x.isfinite()
    assert finite.sum() == x.numel() - 1
    assert out[finite].isfinite().all()
    assert_close(out[finite], ref[finite])
    assert not out[~finite].isfinite().any()


@needs_kernel
@pytest.mark.parametrize('channel', [0, 4])  # channel half, spatial half
@pytest.mark.parametrize('where', [0, 5])
def test_fused_gradients_with_an_inf_input_are_the_official_ones(channel,
                                                                 where):
    """An inf in one plane: the input gradient and the parameter gradients
    are non-finite exactly where the official code's are (that plane's dx,
    its parameter's gradients), and equal to them elsewhere."""
    sa = randomize_(ShuffleAttention(64, groups=8), seed=4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 4, 4, generator=gen)
    x.view(1, 64, -1)[0, channel, where] = float('inf')
    grad_out = torch.randn(x.shape, generator=gen)
    ref_sa = copy.deepcopy(sa)
    xr = x.clone().requires_grad_()
    _official(ref_sa, xr).backward(grad_out)
    ref_dx = xr.grad
    ref_grads = {n: t.grad for n, t in ref_sa.named_parameters()}
    _, dx, grads = _run(sa, x, 'cpu', grad_out)
    pairs = [(dx, ref_dx)] + [(grads[n], ref_grads[n]) for n in PARAM_NAMES]
    assert not ref_dx.isfinite().all()
    for got, ref in pairs:
        finite = ref.isfinite()
        assert torch.equal(got.isfinite(), finite)
        assert_close(got[finite], ref[finite])


@needs_kernel
def test_fused_matches_reference_float64_on_one_pixel_planes():
    sa = randomize_(ShuffleAttention(32, groups=4), seed=1).double()
    x = torch.randn(2, 32, 1, 1, dtype=torch.float64)
    ref_out, ref_dx, ref_grads = _run(sa, x, 'reference')
    out, dx, grads = _run(sa, x, 'cpu')
    assert_close(out, ref_out, atol=1e-10)
    assert_close(dx, ref_dx, atol=1e-6)
    for name in PARAM_NAMES:
        assert_close(grads[name], ref_grads[name], atol=1e-6)


@needs_kernel
def test_fused_grads_match_reference_at_official_init():
    # sweight = 0 takes the kernel's constant-gate branch in both halves
    sa = ShuffleAttention(128, groups=8)
    x = torch.randn(2, 128, 6, 5)
    ref_out, ref_dx, ref_grads = _run(sa, x, 'reference')
    out, dx, grads = _run(sa, x, 'cpu')
    assert_close(out, ref_out)
    assert_close(dx, ref_dx)
    for name in PARAM_NAMES:
        assert_close(grads[name], ref_grads[name],
                     atol=_tolerance(ref_grads[name]))


@needs_kernel
def test_fused_bf16_autocast_matches_float32_reference():
    sa = randomize_(ShuffleAttention(128, groups=16), seed=3)
    x = torch.randn(2, 128, 9, 11)
    sa.impl = 'reference'
    expected = sa(x)
    sa.impl = 'cpu'
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = []
        assert 'mmsa::sa_fused' in ops_run(
            lambda: got.append(sa(x.bfloat16())))
    out = got[0]
    err = (out.float() - expected).norm() / expected.norm()
    assert err <= 1e-2, f'bf16 relative error {err:.3g}'


def _float64_inputs(k: int = 2, groups: int = 2):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2 * k * groups, 3, 5, dtype=torch.float64,
                    generator=gen).requires_grad_()
    params = [torch.randn(1, k, 1, 1, dtype=torch.float64,
                          generator=gen).requires_grad_() for _ in range(4)]
    params += [torch.randn(k, dtype=torch.float64,
                           generator=gen).requires_grad_() for _ in range(2)]
    return x, params


@needs_kernel
def test_fused_gradcheck_float64():
    x, params = _float64_inputs()
    groups = 2

    def fn(x, *params):
        return sa_cpu(x, None, *params, groups)

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-5)
    assert_close(fn(x, *params), official_sa(x, groups, *params), atol=1e-12)


@needs_kernel
def test_fused_bf16_autocast_gradients_reach_the_bf16_input():
    """Under autocast the kernel runs in float32 on the input cast from
    bf16; the input's gradient comes back in bf16, the parameters' in
    float32, both as the float32 reference on the same rounded input."""
    sa = randomize_(ShuffleAttention(64, groups=8), seed=4)
    xb = torch.randn(2, 64, 5, 7).bfloat16()
    expected = _run(sa, xb.float(), 'reference')
    sa.impl = 'cpu'
    sa.zero_grad(set_to_none=True)
    xg = xb.clone().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = []
        assert 'mmsa::sa_fused' in ops_run(lambda: got.append(sa(xg)))
    gen = torch.Generator().manual_seed(1)
    got[0].backward(torch.randn(got[0].shape, generator=gen))
    assert xg.grad.dtype == torch.bfloat16
    got = [xg.grad.float()] + [p.grad for _, p in sa.named_parameters()]
    ref = [expected[1]] + list(expected[2].values())
    for g, r in zip(got, ref):
        assert g.dtype == torch.float32
        err = (g - r).norm() / r.norm()
        assert err <= 1e-2, f'relative error {err:.3g}'


@needs_kernel
def test_fused_double_backward_is_one_clear_error():
    """The kernel's gradients are not differentiable again: with
    create_graph they come back, and differentiating them raises (they
    depend on x, so passing them on as constants would be wrong)."""
    x, params = _float64_inputs()
    y = sa_cpu(x, None, *params, 2)
    gx, = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=r"differentiable once.*"
                       r"impl='reference'"):
        gx.sum().backward()
    # the way out the message names: the reference composition
    assert torch.autograd.gradgradcheck(
        lambda x, *p: official_sa(x, 2, *p), (x, *params))


@needs_kernel
def test_profiler_names_the_fused_forward_and_backward():
    x, params = _float64_inputs()
    with torch.profiler.profile() as prof:
        sa_cpu(x, None, *params, 2).sum().backward()
    names = {e.name for e in prof.events()}
    assert 'mmsa::sa_fused' in names
    assert any('CppNode<mmsa::SAFused>' in n for n in names), names


@needs_kernel
@pytest.mark.parametrize('mode', ['no_grad', 'inference_mode', 'frozen'])
def test_fused_without_autograd_runs_the_kernel_alone(mode):
    """Where nothing needs a gradient the kernel runs without its autograd
    node: the same output, no grad_fn, still named in profiles; where only
    a parameter needs one (a frozen input), the node records."""
    x, params = _float64_inputs()
    residual = torch.randn_like(x)
    expected = torch.relu(official_sa(x, 2, *params) + residual).detach()
    context = {'no_grad': torch.no_grad, 'inference_mode':
               torch.inference_mode}.get(mode, torch.enable_grad)
    args = (x, 2, *params) if mode != 'frozen' else (
        x.detach(), 2, *[p.detach() for p in params])
    args = (args[0], residual, *args[2:], args[1])
    with context(), torch.profiler.profile() as prof:
        out = sa_cpu(*args)
    assert out.grad_fn is None and not out.requires_grad
    assert out.is_inference() == (mode == 'inference_mode')
    assert_close(out, expected, atol=1e-10)
    assert 'mmsa::sa_fused' in {e.name for e in prof.events()}
    out = sa_cpu(x.detach(), residual, *params, 2)
    assert out.grad_fn.name().endswith('CppNode<mmsa::SAFused>')
    out.sum().backward()
    assert all(p.grad is not None for p in params)


def _residual_run(sa, x, identity, impl):
    sa.impl = impl
    sa.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    identity = identity.detach().clone().requires_grad_()
    got = []
    ran = ops_run(lambda: got.append(block_end(x, sa, None, identity)))
    assert ('mmsa::sa_fused' in ran) == (impl == 'cpu'), ran
    out = got[0]
    gen = torch.Generator().manual_seed(1)
    out.backward(torch.randn(out.shape, generator=gen, dtype=out.dtype))
    grads = [x.grad, identity.grad] + [sa.get_parameter(n).grad
                                       for n in PARAM_NAMES]
    return [out.detach()] + grads


@needs_kernel
@pytest.mark.parametrize('shape,groups', CASES)
@pytest.mark.parametrize('channels_last', [False, True])
def test_fused_residual_relu_matches_composition(shape, groups,
                                                 channels_last):
    """relu(SA(x) + identity) in one pass vs SA, add and ReLU as ops (the
    reference path); about half the outputs are clipped by the ReLU."""
    sa = randomize_(ShuffleAttention(shape[1], groups=groups), seed=shape[2])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen) * 2 + 1
    identity = torch.randn(shape, generator=gen) * 2 - 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        identity = identity.contiguous(memory_format=torch.channels_last)
    expected = _residual_run(sa, x, identity, 'reference')
    assert 0.2 < (expected[0] == 0).float().mean() < 0.8
    for got, ref in zip(_residual_run(sa, x, identity, 'cpu'), expected):
        assert_close(got, ref, atol=_tolerance(ref))


@needs_kernel
def test_fused_residual_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    k, groups = 2, 2
    shape = (2, 2 * k * groups, 3, 5)
    x = torch.randn(shape, dtype=torch.float64, generator=gen)
    # keep SA(x) + identity away from the ReLU's kink, where finite
    # differences are not the derivative
    identity = torch.randn(shape, dtype=torch.float64, generator=gen)
    identity += torch.sign(identity) * 3
    params = [torch.randn(1, k, 1, 1, dtype=torch.float64,
                          generator=gen).requires_grad_() for _ in range(4)]
    params += [torch.randn(k, dtype=torch.float64,
                           generator=gen).requires_grad_() for _ in range(2)]

    def fn(x, identity, *params):
        return sa_cpu(x, identity, *params, groups)

    inputs = (x.requires_grad_(), identity.requires_grad_(), *params)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)
    expected = torch.relu(official_sa(x, groups, *params) + identity)
    assert_close(fn(*inputs), expected, atol=1e-12)


@needs_kernel
def test_fused_residual_bf16_autocast_matches_float32_composition():
    sa = randomize_(ShuffleAttention(128, groups=16), seed=3)
    x, identity = torch.randn(2, 128, 9, 11), torch.randn(2, 128, 9, 11)
    sa.impl = 'reference'
    expected = block_end(x, sa, None, identity)
    sa.impl = 'cpu'
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = []
        assert 'mmsa::sa_fused' in ops_run(lambda: got.append(block_end(
            x.bfloat16(), sa, None, identity.bfloat16())))
    out = got[0]
    # computed in float32, returned in the input's dtype
    assert out.dtype == torch.bfloat16
    err = (out.float() - expected).norm() / expected.norm()
    assert err <= 1e-2, f'bf16 relative error {err:.3g}'


def test_residual_of_another_shape_is_one_clear_error():
    sa = ShuffleAttention(8, groups=2)
    with pytest.raises(ValueError, match=r'identity shape \(1, 8, 2, 3\) '
                       r"differs from the input's \(1, 8, 2, 2\)"):
        block_end(torch.randn(1, 8, 2, 2), sa, None,
                  torch.randn(1, 8, 2, 3))


@needs_kernel
@pytest.mark.parametrize('early_stop', [True, False])
def test_checkpointed_residual_blocks_leave_no_output_behind(early_stop):
    """Non-reentrant checkpointing (the backbones' with_cp) re-runs the
    block in the backward and, by default, stops it by raising as soon as
    the saved tensors are back. Once the step is over, nothing may hold
    SA's outputs: what the step left allocated (torch's profiler) is the
    gradients, to the byte."""
    sa = randomize_(ShuffleAttention(64, groups=8).double())
    conv = torch.nn.Conv2d(64, 64, 1).double()
    x = torch.randn(2, 64, 32, 32, dtype=torch.float64, requires_grad=True)
    with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU],
            profile_memory=True) as prof:
        with torch.utils.checkpoint.set_checkpoint_early_stop(early_stop):
            y = torch.utils.checkpoint.checkpoint(
                lambda t: conv(block_end(conv(t), sa, None, t)), x,
                use_reentrant=False)
            y.sum().backward()
        del y
    left = sum(e.self_cpu_memory_usage or 0 for e in prof.events())
    grads = [p.grad for p in (x, *sa.parameters(), *conv.parameters())]
    assert all(g is not None for g in grads)
    assert left == sum(g.nbytes for g in grads)


@needs_kernel
def test_fused_residual_output_changed_in_place_is_caught():
    """The backward reads the output (the ReLU's mask): changing it in place
    before the backward is autograd's usual error, not a wrong gradient."""
    x, params = _float64_inputs()
    y = sa_cpu(x, torch.randn_like(x), *params, 2)
    y.mul_(2)
    with pytest.raises(RuntimeError, match='modified by an inplace'):
        y.sum().backward()


def test_auto_runs_the_kernel_where_it_takes_the_input():
    """On CPU ``'auto'`` is the C++ kernel; bf16 outside autocast, which it
    does not take, runs the reference."""
    sa = randomize_(ShuffleAttention(64, groups=8))
    ran = ops_run(lambda: sa(torch.randn(1, 64, 4, 4)))
    assert ('mmsa::sa_fused' in ran) == (sa_ops._ext is not None)
    ran = ops_run(lambda: sa(torch.randn(1, 64, 4, 4, dtype=torch.bfloat16)))
    assert 'mmsa::sa_fused' not in ran


def test_unavailable_kernel_falls_back_with_one_log_line():
    sa = randomize_(ShuffleAttention(64, groups=8, impl='cpu'))
    x = torch.randn(2, 64, 5, 3)
    with mock.patch.object(sa_ops, '_ext', None), \
            mock.patch.object(dispatch, '_LOGGED', set()), \
            mock.patch.object(dispatch, 'print_log') as log:
        assert 'not built' in sa_cpu_unsupported(x)
        out = sa(x)
        sa(x)
    assert log.call_count == 1 and 'reference path' in log.call_args[0][0]
    sa.impl = 'reference'
    assert_close(out, sa(x))


@needs_kernel
@pytest.mark.parametrize('dtype,autocast,shape,device', [
    (torch.float32, False, (1, 16, 3, 3), 'cpu'),
    (torch.float64, False, (1, 16, 3, 3), 'cpu'),
    (torch.bfloat16, False, (1, 16, 3, 3), 'cpu'),
    (torch.bfloat16, True, (1, 16, 3, 3), 'cpu'),
    (torch.float16, False, (1, 16, 3, 3), 'cpu'),
    (torch.float32, True, (1, 16, 3, 3), 'cpu'),
    (torch.float32, False, (1, 16, 0, 3), 'cpu'),
    (torch.float32, False, (1, 16, 3, 3), 'meta'),
])
def test_if_supported_declines_exactly_what_is_unsupported(
        dtype, autocast, shape, device):
    """The module's one C++ call decides what sa_cpu_unsupported explains:
    None where (and only where) there is a reason, which sa_cpu raises."""
    params = [p.detach() for p in
              randomize_(ShuffleAttention(16, groups=2)).parameters()]
    x = torch.randn(shape, device=device).to(dtype)
    with torch.autocast('cpu', enabled=autocast):
        reason = sa_cpu_unsupported(x)
        out = sa_ops.sa_cpu_if_supported(x, None, *params, 2)
        assert (out is None) == (reason is not None)
        if reason is None:
            assert out.dtype == (torch.float64 if dtype == torch.float64
                                 else torch.float32)
            assert_close(out, official_sa(x.to(out.dtype), 2, *[
                p.to(out.dtype) for p in params]))
        else:
            with pytest.raises(ValueError, match=re.escape(reason)):
                sa_cpu(x, None, *params, 2)


@needs_kernel
def test_empty_planes_are_one_clear_error_and_the_kernel_refuses_them():
    sa = randomize_(ShuffleAttention(64, groups=8))
    x = torch.randn(1, 64, 0, 4, requires_grad=True)
    with pytest.raises(ValueError, match=r'H x W = 0 x 4.*too small'):
        sa(x)
    params = [p.detach() for p in sa.parameters()]
    with pytest.raises(RuntimeError, match='H x W = 0 x 4'):
        sa_ops._ext.forward(x.detach(), params, 8, 1e-5)


def test_sa_rejects_unknown_impl():
    with pytest.raises(ValueError, match=r"impl='cuda' is not a path of "
                       r"this module; choose one of \['auto', 'triton', "
                       r"'cpu', 'reference'\]"):
        ShuffleAttention(64, groups=8, impl='cuda')


@needs_kernel
def test_isa_in_use_follows_mmsa_sa_isa():
    want = os.environ.get('MMSA_SA_ISA')
    assert sa_ops._ext.isa() == (want or sa_ops._ext.supported_isas()[0])


@needs_kernel
@pytest.mark.parametrize('isa', ['avx512', 'avx2', 'default'])
def test_kernels_of_each_isa_against_reference(isa):
    """The other ISAs' kernels run only on other CPUs unless forced."""
    if os.environ.get('MMSA_SA_ISA'):
        pytest.skip('already inside a forced-ISA run')
    if isa not in sa_ops._ext.supported_isas():
        pytest.skip(f'this CPU/build has no {isa}')
    select = ('fused_forward_and_grads or float64 or official_init or '
              'isa_in_use or residual_relu')
    proc = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
         __file__, '-k', select],
        env={**os.environ, 'MMSA_SA_ISA': isa},
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert ' passed' in proc.stdout and 'skipped' not in proc.stdout


def _stderr_of_fused_sa_with(**env) -> str:
    """One fused SA call in a fresh process (the kernel reads its
    environment once); it must fail."""
    code = ('import torch; from mmsa.ops import sa_cpu; '
            'p = [torch.randn(1, 2, 1, 1)] * 4 + [torch.randn(2)] * 2; '
            'sa_cpu(torch.randn(1, 8, 2, 2), None, *p, 2)')
    proc = subprocess.run([sys.executable, '-c', code],
                          env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    return proc.stderr


@needs_kernel
def test_unknown_isa_is_one_clear_error():
    assert ("MMSA_SA_ISA must be avx512, avx2 or default, got 'sse9'"
            in _stderr_of_fused_sa_with(MMSA_SA_ISA='sse9'))
