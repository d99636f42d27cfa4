import pytest
import torch
import torch.nn.functional as F
from testing_utils import (SHAPES, assert_close, check_bf16_autocast,
                           check_channels_last, check_compile, num_params,
                           randomize_)

from mmsa.attention.lka import LargeKernelAttention


def official_lka(x, conv0, conv_spatial, conv1):
    """``LKA.forward`` of Visual-Attention-Network/VAN-Classification."""
    dim = x.shape[1]
    u = x.clone()
    attn = F.conv2d(x, conv0.weight, conv0.bias, padding=2, groups=dim)
    attn = F.conv2d(attn, conv_spatial.weight, conv_spatial.bias, stride=1,
                    padding=9, dilation=3, groups=dim)
    attn = F.conv2d(attn, conv1.weight, conv1.bias)
    return u * attn


@pytest.mark.parametrize('shape', SHAPES)
def test_lka_matches_official_forward(shape):
    lka = randomize_(LargeKernelAttention(shape[1]), seed=shape[1])
    x = torch.randn(shape)
    with torch.no_grad():
        expected = official_lka(x, lka.conv0, lka.conv_spatial, lka.conv1)
        assert_close(lka(x), expected, atol=1e-5)


def test_lka_receptive_field_is_23():
    """5x5 then 7x7 dilated by 3: the paper's "21x21" spans 23 pixels."""
    lka = randomize_(LargeKernelAttention(2))
    x = torch.randn(1, 2, 31, 31, requires_grad=True)
    lka(x)[0, :, 15, 15].sum().backward()
    seen = x.grad[0].abs().sum(0)
    rows = seen.sum(1).nonzero().flatten()
    cols = seen.sum(0).nonzero().flatten()
    assert rows.tolist() == cols.tolist() == list(range(4, 27))


def test_lka_parameter_names_follow_official_code():
    names = {n for n, _ in LargeKernelAttention(8).named_parameters()}
    assert names == {f'{m}.{p}' for m in ('conv0', 'conv_spatial', 'conv1')
                     for p in ('weight', 'bias')}


def test_lka_parameter_count_is_c2_plus_77c():
    for c in (1, 32, 64, 160, 256):
        assert num_params(LargeKernelAttention(c)) == c * c + 77 * c
    assert num_params(LargeKernelAttention(64)) == 9_024


def test_lka_channels_last_autocast_compile_at_64_channels():
    """``run_common_checks``' steps, on random weights with O(1) outputs.

    ``randomize_``'s weights (std 0.5) over 74 depthwise taps make LKA's
    output O(100) at C=64; channels_last reorders the fp32 sums, and 1-2
    ulps there (up to 4e-5) exceed the helper's absolute 1e-5. So the
    weights are randomised as usual, then scaled down before the checks.
    """
    lka = randomize_(LargeKernelAttention(64)).eval()
    with torch.no_grad():
        lka.conv0.weight.mul_(0.2)
        lka.conv_spatial.weight.mul_(0.15)
        lka.conv1.weight.mul_(0.125)
    x = torch.randn(2, 64, 9, 11)
    with torch.no_grad():
        assert lka(x).shape == x.shape
        check_channels_last(lka, x)
        check_bf16_autocast(lka, x)
    check_compile(lka, x)
