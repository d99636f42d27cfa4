import pytest
import torch
from testing_utils import SHAPES, assert_close, num_params, randomize_

from mmsa.attention.sge import SpatialGroupEnhance
from mmsa.testing import official_sge


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


def test_sge_rejects_single_position_input():
    sge = SpatialGroupEnhance(64, groups=8)
    with pytest.raises(ValueError, match=r'SGE\(in_channels=64, groups=8\): '
                       r'input of shape \(2, 64, 1, 1\) has H\*W=1.*'
                       r'H\*W > 1'):
        sge(torch.randn(2, 64, 1, 1))
    assert torch.isfinite(sge(torch.randn(2, 64, 1, 2))).all()
