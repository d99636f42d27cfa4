import math

import pytest
import torch
import torch.nn.functional as F
from testing_utils import (SHAPES, assert_close, check_gradcheck, num_params,
                           randomize_, run_common_checks)

from mmsa.attention import EfficientChannelAttention, build_attention


def official_eca(x, weight):
    """``eca_layer.forward`` of BangguWu/ECANet, written out."""
    k = weight.shape[-1]
    y = F.adaptive_avg_pool2d(x, 1)
    y = F.conv1d(y.squeeze(-1).transpose(-1, -2), weight,
                 padding=(k - 1) // 2).transpose(-1, -2).unsqueeze(-1)
    return x * torch.sigmoid(y).expand_as(x)


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


def test_eca_gradcheck_float64():
    check_gradcheck(randomize_(EfficientChannelAttention(8, kernel_size=3)),
                    (2, 8, 3, 4))


def test_eca_channels_last_autocast_compile():
    run_common_checks(lambda c: EfficientChannelAttention(c))


@pytest.mark.parametrize('k', [4, 0, -3, 2.5])
def test_eca_rejects_bad_kernel_size(k):
    with pytest.raises(ValueError, match=rf'ECA\(kernel_size={k}, '
                       r'in_channels=64\): kernel_size must be a positive '
                       r'odd int.*try kernel_size='):
        EfficientChannelAttention(64, kernel_size=k)


def test_eca_rejects_unknown_kernel_option():
    with pytest.raises(ValueError, match="kernel_size='big'.*'auto'"):
        EfficientChannelAttention(64, kernel_size='big')


def test_eca_built_by_name():
    eca = build_attention(dict(type='ECA', kernel_size=5), 256)
    assert isinstance(eca, EfficientChannelAttention) and eca.kernel_size == 5


@pytest.mark.parametrize('channels,k,fix', [(64, 129, 63), (5, 7, 5)])
def test_eca_rejects_kernel_wider_than_channels(channels, k, fix):
    with pytest.raises(ValueError, match=rf'ECA\(in_channels={channels}, '
                       rf'kernel_size={k}\): kernel_size must not exceed '
                       rf'in_channels.*try kernel_size={fix} or'):
        EfficientChannelAttention(channels, kernel_size=k)
    assert EfficientChannelAttention(channels, kernel_size=fix).kernel_size \
        == fix
