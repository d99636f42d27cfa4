import pytest
import torch
from testing_utils import (SHAPES, assert_close_to_scale, num_params,
                           randomize_)

from mmsa.attention.cbam import CBAM
from mmsa.testing import OFFICIAL_FORWARDS


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('reduction,kernel_size', [(16, 7), (4, 3)])
def test_cbam_matches_official_forward_eval(shape, reduction, kernel_size):
    cbam = randomize_(CBAM(shape[1], reduction, kernel_size)).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    expected = OFFICIAL_FORWARDS['CBAM'](cbam, x)  # eval: running stats
    with torch.no_grad():
        # float32 sums (channel means, the spatial conv) taken in another
        # order, scaled up by the BN: over 150 seeds the difference stayed
        # below 1e-5 of the output's scale
        assert_close_to_scale(cbam(x), expected, rtol=5e-5)


@pytest.mark.parametrize('shape', [s for s in SHAPES if s[0] >= 2])
def test_cbam_matches_official_forward_train(shape):
    cbam = randomize_(CBAM(shape[1], reduction=8)).train()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    expected = OFFICIAL_FORWARDS['CBAM'](cbam, x)  # train: batch stats
    assert_close_to_scale(cbam(x), expected, rtol=5e-5)


def test_cbam_bn_is_official():
    bn = CBAM(64).spatial_bn
    assert bn.num_features == 1 and bn.momentum == 0.01 and bn.eps == 1e-5
    assert CBAM(64).spatial_conv.bias is None
    # One training step moves the running mean 1% towards the batch mean.
    cbam = randomize_(CBAM(64)).train()
    conv_out = []
    cbam.spatial_conv.register_forward_hook(
        lambda mod, inp, out: conv_out.append(out))
    old = cbam.spatial_bn.running_mean.clone()
    with torch.no_grad():
        cbam(torch.randn(2, 64, 5, 6))
    expected = 0.99 * old + 0.01 * conv_out[0].mean()
    assert torch.allclose(cbam.spatial_bn.running_mean, expected, atol=1e-6)


def test_cbam_parameter_count():
    for c, k in ((256, 7), (512, 3), (64, 5)):
        h = c // 16
        assert num_params(CBAM(c, kernel_size=k)) == \
            2 * c * h + h + c + 2 * k**2 + 2
    assert num_params(CBAM(256)) == 8_564
    # ResNet-50: 3, 4, 6, 3 bottlenecks with 256..2048 output channels.
    total = sum(n * num_params(CBAM(c))
                for n, c in zip((3, 4, 6, 3), (256, 512, 1024, 2048)))
    assert total == 2_532_592  # + ResNet-50 25,557,032 = 28.09M (paper)
