"""The neck hook: attention on each output level of any neck."""
import pytest
import torch
from mmengine.logging import MMLogger
from testing_utils import randomize_

pytest.importorskip('mmdet')

from mmdet.models.necks import FPN  # noqa: E402

from mmsa.attention import EfficientChannelAttention, ShuffleAttention  # noqa
from mmsa.errors import ConfigError  # noqa: E402
from mmsa.models import AttnNeck  # noqa: E402

FPN_CFG = dict(type='FPN', in_channels=[256, 512, 1024, 2048],
               out_channels=256, num_outs=5)


def _features(n=1, size=32):
    return [torch.randn(n, c, size // 2**i, size // 2**i)
            for i, c in enumerate((256, 512, 1024, 2048))]


def test_attention_runs_on_every_fpn_level():
    torch.manual_seed(0)
    hooked = randomize_(AttnNeck(neck=FPN_CFG, attention=dict(type='SA')))
    assert len(hooked.attentions) == 5
    assert all(isinstance(a, ShuffleAttention) for a in hooked.attentions)
    fpn = FPN(**{k: v for k, v in FPN_CFG.items() if k != 'type'})
    fpn.load_state_dict(hooked.neck.state_dict())
    feats = _features()
    with torch.no_grad():
        outs = hooked.eval()(feats)
        plain = fpn.eval()(feats)
    for out, ref, att in zip(outs, plain, hooked.attentions):
        assert torch.allclose(out, att(ref))


def test_no_neck_gates_backbone_levels_for_upernet():
    hooked = AttnNeck(neck=None, in_channels=[256, 512, 1024, 2048],
                      attention=dict(type='ECA'))
    outs = hooked(_features())
    assert [o.shape[1] for o in outs] == [256, 512, 1024, 2048]
    assert [a.kernel_size for a in hooked.attentions] == [5, 5, 5, 7]


def test_default_groups_adapt_per_level_with_a_warning(capsys):
    MMLogger.get_instance('mmsa-test-neck')
    hooked = AttnNeck(neck=None, in_channels=[96, 256],
                      attention=dict(type='SA'))
    assert [a.groups for a in hooked.attentions] == [48, 64]
    out = capsys.readouterr().out
    assert 'WARNING' in out and 'AttnNeck level 0 (96 channels): SA(' \
        'in_channels=96, groups=64): in_channels must be divisible' in out
    assert 'the neck uses ShuffleAttention(in_channels=96, groups=48' in out
    assert 'level 1' not in out  # 64 groups fit 256 channels


def test_groups_written_in_the_config_are_never_changed():
    with pytest.raises(ConfigError, match=(
            r'^AttnNeck level 0 \(96 channels\): SA\(in_channels=96, '
            r'groups=64\): in_channels must be divisible by 2\*groups=128; '
            r'try groups=16 or 48')):
        AttnNeck(neck=None, in_channels=[96, 256],
                 attention=dict(type='SA', groups=64))
    with pytest.raises(ConfigError, match=r'level 0 \(64 channels\): '
                       r'SGE\(in_channels=64, groups=48\)'):
        AttnNeck(neck=FPN_CFG | dict(out_channels=64),
                 attention=dict(type='SGE', groups=48))


def test_strict_groups_fail_with_the_module_message():
    with pytest.raises(ConfigError,
                       match=r'SA\(in_channels=96, groups=64\)'):
        AttnNeck(neck=None, in_channels=[96], attention=dict(type='SA'),
                 adapt_groups=False)


def test_per_level_configs_and_skipped_levels():
    hooked = AttnNeck(neck=FPN_CFG, attention=[
        dict(type='SA'), None, dict(type='ECA'), None, None])
    assert isinstance(hooked.attentions[1], torch.nn.Identity)
    assert isinstance(hooked.attentions[2], EfficientChannelAttention)
    with pytest.raises(ValueError, match='2 attention configs for 5 levels'):
        AttnNeck(neck=FPN_CFG, attention=[dict(type='SA')] * 2)


def test_missing_channels_are_explained():
    with pytest.raises(ValueError, match='needs in_channels'):
        AttnNeck(neck=None, attention=dict(type='SE'))


@pytest.mark.parametrize('scope', ['mmengine', 'mmdet'])
def test_inner_neck_found_whatever_the_default_scope(scope):
    """A runner (or an earlier test) may leave another default scope set;
    FPN lives in mmdet's registry and must still be found."""
    from mmengine.registry import DefaultScope
    DefaultScope.get_instance(f'mmsa-test-{scope}', scope_name=scope)
    hooked = AttnNeck(neck=FPN_CFG, attention=dict(type='SA'))
    assert type(hooked.neck).__name__ == 'FPN'
