"""The protocol every attention follows: ``forward(x, identity=None)``.

With the block's identity, an attention returns ``relu(attention(x) +
identity)``, the end of a ResNet block, and its gradients are those of that
composition; without one, its own output. Bad input is one clear error from
one shared check.
"""
import copy

import pytest
import torch
from testing_utils import randomize_

from mmsa.attention import ATTENTIONS, build_attention

# options that make each module small; every registered attention is here
OPTIONS = {
    'SA': dict(groups=4), 'SE': dict(reduction=4), 'ECA': dict(kernel_size=3),
    'CBAM': dict(reduction=4, kernel_size=3), 'SGE': dict(groups=4),
    'BAM': dict(reduction=4), 'ULSAM': dict(groups=4), 'LKA': dict(),
    'GC': dict(ratio=1 / 4), 'NonLocal': dict(reduction=4)
}


def _build(name: str, channels: int = 16):
    try:
        module = build_attention(dict(type=name, **OPTIONS[name]), channels)
    except ImportError as err:  # GC / NonLocal without mmcv
        pytest.skip(str(err))
    return randomize_(module, seed=len(name)).eval()


def test_every_registered_attention_is_covered():
    assert set(ATTENTIONS) == set(OPTIONS)


@pytest.mark.parametrize('name', sorted(OPTIONS))
def test_identity_gives_relu_of_output_plus_identity(name):
    module = _build(name)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 6, 5, generator=gen)
    identity = torch.randn(x.shape, generator=gen)
    grad_out = torch.randn(x.shape, generator=gen)

    def run(fused):
        m = copy.deepcopy(module)
        xi = x.clone().requires_grad_()
        idt = identity.clone().requires_grad_()
        out = m(xi, identity=idt) if fused else torch.relu(m(xi) + idt)
        out.backward(grad_out)
        grads = [p.grad for p in m.parameters()]
        return out.detach(), xi.grad, idt.grad, grads

    got, expected = run(True), run(False)
    scale = max(1., expected[0].abs().max().item())
    for a, b in zip(got[:3], expected[:3]):
        assert (a - b).abs().max() <= 1e-5 * scale
    for a, b in zip(got[3], expected[3]):
        assert (a - b).abs().max() <= 1e-5 * max(1., b.abs().max().item())


@pytest.mark.parametrize('name', sorted(OPTIONS))
@pytest.mark.parametrize('shape,message', [
    ((16, 6, 5), r'expected a 4-D input N x 16 x H x W, got 3-D'),
    ((1, 2, 16, 6, 5), r'got 5-D'),
    ((2, 8, 6, 5), r'expected 16 channels .* got an input of shape '
     r'\(2, 8, 6, 5\); build it with in_channels=8'),
    ((2, 16, 0, 5), r'no positions \(H x W = 0 x 5\)'),
])
def test_bad_input_is_one_clear_error_naming_the_module(name, shape, message):
    module = _build(name)
    with pytest.raises(ValueError, match=message) as info:
        module(torch.randn(shape))
    assert type(module).__name__ in str(info.value)


@pytest.mark.parametrize('name', ['SA', 'SE', 'ECA', 'SGE', 'CBAM'])
def test_gating_output_follows_the_input_dtype_and_layout(name):
    module = _build(name).to(torch.bfloat16)
    x = torch.randn(2, 16, 6, 5).to(torch.bfloat16).contiguous(
        memory_format=torch.channels_last)
    for identity in (None, torch.randn_like(x)):
        out = module(x, identity=identity)
        assert out.dtype == torch.bfloat16
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_mismatched_identity_is_one_clear_error():
    module = _build('SE')
    with pytest.raises(ValueError, match=r'identity shape \(2, 16, 3, 5\)'):
        module(torch.randn(2, 16, 6, 5), identity=torch.randn(2, 16, 3, 5))
