import pytest
import torch
from testing_utils import SHAPES, assert_close, num_params, randomize_

from mmsa.attention import SqueezeExcitation
from mmsa.testing import OFFICIAL_FORWARDS


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('reduction', [16, 4])
def test_se_matches_official_forward(shape, reduction):
    se = randomize_(SqueezeExcitation(shape[1], reduction=reduction))
    x = torch.randn(shape)
    assert_close(se(x), OFFICIAL_FORWARDS['SE'](se, x))


def test_se_parameter_count_resnet50():
    per_block = [num_params(SqueezeExcitation(c))
                 for c in (256, 512, 1024, 2048)]
    c, h = 256, 16
    assert per_block[0] == 2 * c * h + h + c
    total = sum(n * p for n, p in zip((3, 4, 6, 3), per_block))
    assert total == 2_530_992  # SE-ResNet-50 28,088,024 - ResNet-50 25,557,032


def test_se_divisor_rounds_hidden_width():
    assert SqueezeExcitation(64, reduction=16).hidden_channels == 4
    assert SqueezeExcitation(64, reduction=16, divisor=8).hidden_channels == 8
    assert SqueezeExcitation(200, reduction=16,
                             divisor=8).hidden_channels == 16
