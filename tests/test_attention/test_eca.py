import math

import pytest
import torch
from testing_utils import SHAPES, assert_close, num_params, randomize_

from mmsa.attention import EfficientChannelAttention
from mmsa.testing import official_eca


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('k', [3, 5, 7])
def test_eca_matches_official_forward(shape, k):
    eca = randomize_(EfficientChannelAttention(shape[1], kernel_size=k))
    x = torch.randn(shape)
    assert_close(eca(x), official_eca(x, eca.conv.weight))


@pytest.mark.parametrize('channels,expected', [(64, 3), (256, 5), (512, 5),
                                               (1024, 5), (2048, 7)])
def test_eca_auto_kernel_follows_paper_rule(channels, expected):
    # k = |log2(C)/2 + 1/2| rounded to the nearest odd (gamma=2, b=1)
    t = int(abs((math.log2(channels) + 1) / 2))
    assert expected == (t if t % 2 else t + 1)
    assert EfficientChannelAttention(channels).kernel_size == expected


def test_eca_released_resnet50_kernels_add_80_params():
    total = sum(
        n * num_params(EfficientChannelAttention(c, kernel_size=k))
        for n, c, k in zip((3, 4, 6, 3), (256, 512, 1024, 2048),
                           (3, 5, 5, 7)))
    assert total == 80


def test_eca_parameter_name_is_official():
    names = [n for n, _ in EfficientChannelAttention(64).named_parameters()]
    assert names == ['conv.weight']
