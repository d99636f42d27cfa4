import pytest
import torch
from testing_utils import (SHAPES, assert_close, num_params, official_sa,
                           randomize_)

from mmsa.attention import ShuffleAttention, channel_shuffle


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('groups', [64, 16, 4])
def test_sa_matches_official_forward(shape, groups):
    n, c, h, w = shape
    c = max(c, 2 * groups)
    sa = randomize_(ShuffleAttention(c, groups=groups), seed=groups)
    x = torch.randn(n, c, h, w)
    expected = official_sa(x, groups, sa.cweight, sa.cbias, sa.sweight,
                           sa.sbias, sa.gn.weight, sa.gn.bias)
    assert_close(sa(x), expected)


def test_channel_shuffle_index_map():
    c = 8
    x = torch.arange(c, dtype=torch.float32).reshape(1, c, 1, 1)
    out = channel_shuffle(x, 2).flatten().tolist()
    # input channel g*C/2 + i lands at output channel 2i + g
    for g in range(2):
        for i in range(c // 2):
            assert out[2 * i + g] == g * c // 2 + i


def test_sa_init_is_official():
    sa = ShuffleAttention(256)
    k = 256 // 128
    for name, value in [('cweight', 0), ('cbias', 1), ('sweight', 0),
                        ('sbias', 1)]:
        p = getattr(sa, name)
        assert p.shape == (1, k, 1, 1)
        assert torch.all(p == value)
    assert torch.all(sa.gn.weight == 1) and torch.all(sa.gn.bias == 0)
    assert sa.gn.num_groups == sa.gn.num_channels == k


def test_sa_parameter_names_follow_official_code():
    names = {n for n, _ in ShuffleAttention(256).named_parameters()}
    assert names == {'cweight', 'cbias', 'sweight', 'sbias', 'gn.weight',
                     'gn.bias'}


def test_sa_parameter_count_is_3c_over_g():
    for c in (256, 512, 1024, 2048):
        assert num_params(ShuffleAttention(c, groups=64)) == 3 * c // 64
    # ResNet-50: 3, 4, 6, 3 bottlenecks with 256..2048 output channels.
    total = sum(n * num_params(ShuffleAttention(c, groups=64))
                for n, c in zip((3, 4, 6, 3), (256, 512, 1024, 2048)))
    assert total == 708


class _Doubled(torch.nn.Module):

    def forward(self, t):
        return 2 * t


@pytest.mark.parametrize('impl', ['auto', 'reference'])
def test_sa_uses_parametrised_and_functional_call_parameters(impl):
    """The module reads its parameters from the parameter dicts (the fast
    path); a parametrisation, which takes a name out of them, and
    torch.func.functional_call, which swaps tensors into them, must still
    give the parameters they define."""
    sa = randomize_(ShuffleAttention(32, groups=4, impl=impl))
    x = torch.randn(2, 32, 5, 6)
    p = {n: t.detach().clone() for n, t in sa.named_parameters()}

    def official(**over):
        q = {**p, **over}
        return official_sa(x, 4, q['cweight'], q['cbias'], q['sweight'],
                           q['sbias'], q['gn.weight'], q['gn.bias'])

    new = {n: torch.randn_like(t) for n, t in p.items()}
    assert_close(torch.func.functional_call(sa, new, (x, )),
                 official(**new))
    torch.nn.utils.parametrize.register_parametrization(
        sa, 'sweight', _Doubled())
    torch.nn.utils.parametrize.register_parametrization(
        sa.gn, 'bias', _Doubled())
    assert_close(sa(x),
                 official(sweight=2 * p['sweight'],
                          **{'gn.bias': 2 * p['gn.bias']}))
