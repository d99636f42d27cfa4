import pytest
import torch
import torch.nn.functional as F
from testing_utils import (SHAPES, assert_close, check_gradcheck, num_params,
                           randomize_, run_common_checks)

from mmsa.attention import build_attention
from mmsa.attention.sge import SpatialGroupEnhance


def official_sge(x, groups, weight, bias):
    """``SpatialGroupEnhance.forward`` of implus/PytorchInsight, written out.
    """
    b, c, h, w = x.size()
    x = x.view(b * groups, -1, h, w)
    xn = x * F.adaptive_avg_pool2d(x, 1)
    xn = xn.sum(dim=1, keepdim=True)
    t = xn.view(b * groups, -1)
    t = t - t.mean(dim=1, keepdim=True)
    std = t.std(dim=1, keepdim=True) + 1e-5
    t = t / std
    t = t.view(b, groups, h, w)
    t = t * weight + bias
    t = t.view(b * groups, 1, h, w)
    x = x * torch.sigmoid(t)
    return x.view(b, c, h, w)


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('groups', [64, 16, 4])
@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_sge_matches_official_forward(shape, groups, mode):
    sge = randomize_(SpatialGroupEnhance(shape[1], groups=groups),
                     seed=groups)
    sge.train(mode == 'train')
    x = torch.randn(shape)
    assert_close(sge(x), official_sge(x, groups, sge.weight, sge.bias))


def test_sge_init_is_official():
    sge = SpatialGroupEnhance(256)
    assert sge.weight.shape == sge.bias.shape == (1, 64, 1, 1)
    assert torch.all(sge.weight == 0) and torch.all(sge.bias == 1)
    names = {n for n, _ in sge.named_parameters()}
    assert names == {'weight', 'bias'}
    # With the init every gate is sigmoid(1).
    x = torch.randn(2, 256, 4, 5)
    assert_close(sge(x), x * torch.sigmoid(torch.tensor(1.)))


def test_sge_parameter_count_is_2g():
    for c, g in ((256, 64), (512, 64), (64, 8), (8, 2)):
        assert num_params(SpatialGroupEnhance(c, groups=g)) == 2 * g
    total = sum(n * num_params(SpatialGroupEnhance(c))
                for n, c in zip((3, 4, 6, 3), (256, 512, 1024, 2048)))
    assert total == 2_048


def test_sge_gradcheck_float64():
    check_gradcheck(randomize_(SpatialGroupEnhance(8, groups=2)),
                    (2, 8, 5, 6))


def test_sge_channels_last_autocast_compile():
    run_common_checks(lambda c: SpatialGroupEnhance(c, groups=8))


def test_sge_rejects_single_position_input():
    sge = SpatialGroupEnhance(64, groups=8)
    with pytest.raises(ValueError, match=r'SGE\(in_channels=64, groups=8\): '
                       r'input of shape \(2, 64, 1, 1\) has H\*W=1.*'
                       r'H\*W > 1'):
        sge(torch.randn(2, 64, 1, 1))
    assert torch.isfinite(sge(torch.randn(2, 64, 1, 2))).all()


@pytest.mark.parametrize('channels,groups,message', [
    (96, 64, r'SGE\(in_channels=96, groups=64\): in_channels must be '
     r'divisible by groups; try groups=48 or 96'),
    (30, 4, r'SGE\(in_channels=30, groups=4\).*try groups=3 or 5'),
    (64, 0, r'SGE\(in_channels=64, groups=0\): groups must be a positive '
     r'int, got 0'),
])
def test_sge_rejects_bad_groups(channels, groups, message):
    with pytest.raises(ValueError, match=message):
        SpatialGroupEnhance(channels, groups=groups)


def test_sge_built_by_name_and_dict():
    assert isinstance(build_attention('SGE', 256), SpatialGroupEnhance)
    sge = build_attention(dict(type='SGE', groups=8), 64)
    assert isinstance(sge, SpatialGroupEnhance) and sge.groups == 8
    assert sge._abbr_ == 'sge'
