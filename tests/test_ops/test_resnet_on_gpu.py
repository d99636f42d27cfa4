"""mmsa's kernels in a whole attention ResNet-50 on a GPU.

The backbone is the benchmark's plain-PyTorch ResNet-50 of mmdet's
architecture (tools/analysis_tools/benchmark_attention.py; the GPU
machines have no mmcv or mmdet), every block ending in ``block_end``. What
only a GPU shows at that scale: a train step captured in a CUDA graph and
replayed, ``torch.compile`` of the backbone keeping the kernels (the custom
ops in its graphs), AMP with a GradScaler, and a few training iterations
whose losses equal the reference path's (in full float32: tests/conftest.py
turns TF32 off). Marked ``cuda``: run with ``TRITON_INTERPRET=0 pytest -m
cuda`` (tools/gpu_check.py does).
"""
import copy
from unittest import mock

import pytest
import torch
from testing_utils import cuda_test, load_tool, randomize_

from mmsa.attention import (CBAM, EfficientChannelAttention, ShuffleAttention,
                            SpatialGroupEnhance, SqueezeExcitation)

ATTENTION = {
    'SA': lambda c: ShuffleAttention(c, groups=64),
    'SE': lambda c: SqueezeExcitation(c, reduction=16),
    'ECA': lambda c: EfficientChannelAttention(c),
    'CBAM': lambda c: CBAM(c, reduction=16, kernel_size=7),
    'SGE': lambda c: SpatialGroupEnhance(c, groups=64),
}
INPUT = (2, 3, 128, 160)


def _resnet50(name: str) -> torch.nn.Module:
    """An attention ResNet-50 on the GPU, random attention parameters, every
    attention on the kernels."""
    bench = load_tool('tools/analysis_tools/benchmark_attention.py')
    torch.manual_seed(0)

    def attention(c):
        module = randomize_(ATTENTION[name](c), seed=c)
        module.impl = 'triton'
        return module

    return bench.ResNet50(attention).cuda()


def _loss(outs) -> torch.Tensor:
    return sum((o.float()**2).mean() for o in outs)


def _with_reference_twin(name: str, steps: int) -> tuple:
    """An attention ResNet-50 on the kernels, its copy on the reference
    composition, and ``steps`` seeded inputs."""
    model = _resnet50(name)
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if hasattr(m, 'impl'):
            m.impl = 'reference'
    gen = torch.Generator(device='cuda').manual_seed(0)
    return model, twin, [torch.randn(INPUT, device='cuda', generator=gen)
                         for _ in range(steps)]


@cuda_test()
@pytest.mark.parametrize('name', ['SA', 'SE', 'CBAM'])
def test_training_losses_match_the_reference_path(name):
    """Five SGD steps (momentum, BN in training) of an attention ResNet-50:
    the kernels' losses, and the weights after, equal the reference
    composition's from the same start."""
    model, twin, inputs = _with_reference_twin(name, 5)
    losses = {}
    for key, m in (('triton', model), ('reference', twin)):
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        losses[key] = []
        for x in inputs:
            loss = _loss(m(x))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses[key].append(loss.item())
    for got, ref in zip(losses['triton'], losses['reference']):
        assert abs(got - ref) <= 1e-4 * abs(ref), losses
    for (k, a), b in zip(model.state_dict().items(),
                         twin.state_dict().values()):
        if a.is_floating_point():
            assert (a - b).abs().max() <= 1e-3 * max(1., b.abs().max()), k


@cuda_test()
@pytest.mark.parametrize('name', ['SA', 'SGE'])
def test_cuda_graph_replays_a_train_step(name):
    """A whole train step (forward, backward, SGD) captured in a CUDA graph
    (no host syncs or allocations outside the graph's pool in the kernels'
    host code) and replayed on new inputs gives the losses, the weights and
    the running statistics of the same steps run eagerly."""
    model = _resnet50(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    static_x = torch.randn(INPUT, device='cuda')

    def step():
        loss = _loss(model(static_x))
        loss.backward()
        opt.step()
        return loss

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: JIT, cuDNN, momentum buffers
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    twin = copy.deepcopy(model)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    twin_opt.load_state_dict(opt.state_dict())
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = step()
    gen = torch.Generator(device='cuda').manual_seed(1)
    for _ in range(3):
        x = torch.randn(INPUT, device='cuda', generator=gen)
        static_x.copy_(x)
        graph.replay()
        twin_opt.zero_grad(set_to_none=True)
        loss = _loss(twin(x))
        loss.backward()
        twin_opt.step()
        assert torch.allclose(static_loss, loss, rtol=1e-4, atol=0)
    for (k, a), b in zip(model.state_dict().items(),
                         twin.state_dict().values()):
        if a.is_floating_point():
            assert (a - b).abs().max() <= 1e-3 * max(1., b.abs().max()), k
        else:
            assert torch.equal(a, b), k


@cuda_test()
@pytest.mark.skipif(not hasattr(torch.library, 'custom_op'),
                    reason='torch.library.custom_op needs torch >= 2.4')
def test_compiled_backbone_keeps_the_kernels():
    """torch.compile of SA-ResNet-50: its forward graph holds the block-end
    custom op once per block (16), its backward graph the kernels' two
    backward ops as often; outputs and gradients equal eager's."""
    from torch._dynamo.backends.common import aot_autograd
    model = _resnet50('SA')
    graphs = []

    def keep(gm, inputs):
        graphs.append(str(gm.graph))
        return gm

    x = torch.randn(INPUT, device='cuda')

    def run(m):
        outs = m(x)
        _loss(outs).backward()
        return [o.detach() for o in outs] + [
            p.grad for p in m.parameters()]

    torch._dynamo.reset()
    compiled = torch.compile(copy.deepcopy(model), fullgraph=True,
                             backend=aot_autograd(fw_compiler=keep,
                                                  bw_compiler=keep))
    got, ref = run(compiled), run(model)
    forward, backward = graphs
    assert forward.count('mmsa.block_end.default') == 16
    assert backward.count('mmsa.block_end_sums.default') == 16
    assert backward.count('mmsa.block_end_input_grads.default') == 16
    for a, b in zip(got, ref):
        assert (a - b).abs().max() <= 1e-4 * max(1., b.abs().max())


@cuda_test()
@pytest.mark.skipif(not hasattr(torch.library, 'custom_op'),
                    reason='torch.library.custom_op needs torch >= 2.4')
def test_inductor_runs_the_kernels_inside_its_code():
    """Under inductor (its own Triton code around them) a bottleneck's
    block end still runs mmsa's kernels, forward and backward, with eager's
    results."""
    from mmsa.ops import block_end_fused, block_end_triton
    bench = load_tool('tools/analysis_tools/benchmark_attention.py')
    torch.manual_seed(0)
    block = bench.Bottleneck(256, 64, 1, lambda c: randomize_(
        ShuffleAttention(c, groups=64, impl='triton'), seed=1)).cuda()
    x = torch.randn(2, 256, 56, 72, device='cuda')

    def run(m):
        xi = x.clone().requires_grad_()
        out = m(xi)
        _loss([out]).backward()
        return [out.detach(), xi.grad] + [p.grad for p in m.parameters()]

    torch._dynamo.reset()
    compiled = torch.compile(copy.deepcopy(block), backend='inductor')
    forward = mock.patch.object(block_end_fused, 'forward',
                                wraps=block_end_fused.forward)
    backward = mock.patch.object(block_end_triton, 'input_gradients',
                                 wraps=block_end_triton.input_gradients)
    with forward as fwd, backward as bwd:
        got = run(compiled)
        assert fwd.call_count == 1 and bwd.call_count == 1
        ref = run(block)
    for a, b in zip(got, ref):
        assert (a - b).abs().max() <= 1e-4 * max(1., b.abs().max())


@cuda_test()
@pytest.mark.parametrize('name', ['SA', 'ECA', 'CBAM'])
def test_amp_with_grad_scaler_trains_like_the_reference(name):
    """Four steps under fp16 autocast with a GradScaler: no step is skipped
    for an inf or NaN gradient (the scale stays where it started, as the
    reference path's), the gradients the scaler unscales are float32 and
    finite, and the losses follow the reference path's to fp16's
    precision."""
    model, twin, inputs = _with_reference_twin(name, 4)
    scaler_cls = getattr(torch.amp, 'GradScaler', None)
    runs = {}
    for key, m in (('triton', model), ('reference', twin)):
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        scaler = (scaler_cls('cuda') if scaler_cls is not None else
                  torch.cuda.amp.GradScaler())
        losses, scales = [], []
        for x in inputs:
            with torch.autocast('cuda', dtype=torch.float16):
                loss = _loss(m(x))
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            grads = [p.grad for p in m.parameters() if p.grad is not None]
            assert all(g.dtype == torch.float32 for g in grads)
            if key == 'triton':
                assert all(torch.isfinite(g).all() for g in grads)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            scales.append(scaler.get_scale())
        runs[key] = (losses, scales)
    (losses, scales), (ref_losses, ref_scales) = runs['triton'], runs[
        'reference']
    assert len(set(scales)) == 1 and scales == ref_scales
    for got, ref in zip(losses, ref_losses):
        assert abs(got - ref) <= 2e-2 * abs(ref), (losses, ref_losses)
