"""The builder's one rule for attention options (mmsa.attention.builder)."""
import warnings

import pytest
from mmengine.logging import MMLogger

from mmsa.attention import (ShuffleAttention, build_attention,
                            get_attention_class)
from mmsa.attention.builder import split_attention_cfg


def test_an_option_no_attention_takes_is_refused_naming_it():
    with pytest.raises(TypeError, match=(
            r"^ECA: unknown option\(s\) \['kernal_size'\]; valid options "
            r"are \['kernel_size'")):
        build_attention(dict(type='ECA', kernal_size=3), 64)


def test_an_option_of_another_type_is_dropped_with_one_warning():
    with pytest.warns(UserWarning, match=(
            r"^attention SE does not take groups=8 \(an option of "
            r"SA/SGE/ULSAM\); ignored.*write attention=SE")):
        se = build_attention(dict(type='SE', groups=8), 64)
    assert se.hidden_channels == 4


def test_a_written_value_that_does_not_fit_is_the_modules_error():
    with pytest.raises(ValueError, match=r'^SA\(in_channels=32, groups=64\)'
                       r': in_channels must be divisible by 2\*groups=128'):
        build_attention(dict(type='SA', groups=64), 32)


def test_only_a_default_adapts_with_a_warning_naming_where(capsys):
    MMLogger.get_instance('mmsa-test-builder')
    sa = build_attention('SA', 32, where='layer1.0, after_conv3')
    assert isinstance(sa, ShuffleAttention) and sa.groups == 16
    out = capsys.readouterr().out
    assert 'WARNING' in out and (
        'layer1.0, after_conv3: SA(in_channels=32, groups=64): in_channels '
        'must be divisible by 2*groups=128; try groups=16; the default '
        'groups=64 does not fit, so it uses ShuffleAttention(in_channels=32, '
        'groups=16') in out
    with pytest.raises(ValueError, match=r'SA\(in_channels=32, groups=64\)'):
        build_attention('SA', 32, adapt_defaults=False)


def test_a_default_that_fits_is_kept_silently(capsys):
    MMLogger.get_instance('mmsa-test-builder')
    assert build_attention('SA', 256).groups == 64
    assert 'does not fit' not in capsys.readouterr().out


def test_split_gives_each_stage_its_value():
    assert split_attention_cfg(dict(type='ECA', kernel_size=(3, 5, 5, 7)),
                               4) == [
        dict(type='ECA', kernel_size=k) for k in (3, 5, 5, 7)]
    assert split_attention_cfg('SE', 2) == [dict(type='SE')] * 2
    assert split_attention_cfg(dict(type='SE', reduction=8), 3) == [
        dict(type='SE', reduction=8)] * 3


def test_split_refuses_a_per_stage_value_of_another_length():
    with pytest.raises(ValueError, match=(
            r'^SA: groups=\[8, 16\] has 2 values for 3 levels; give one '
            r'groups for all levels or one per level$')):
        split_attention_cfg(dict(type='SA', groups=[8, 16]), 3, 'level')


def test_split_leaves_other_types_options_to_the_build():
    """A swapped type keeps the old type's per-stage values whole: the
    build drops them, with the same warning in every stage."""
    cfgs = split_attention_cfg(dict(type='SE', kernel_size=(3, 5, 5, 7)), 4)
    assert cfgs == [dict(type='SE', kernel_size=(3, 5, 5, 7))] * 4
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        for cfg in cfgs:
            build_attention(cfg, 64)
    assert len({str(w.message) for w in record}) == 1


def test_split_leaves_an_unknown_type_to_the_build():
    assert split_attention_cfg(dict(type='SAA', groups=(1, 2)), 2) == [
        dict(type='SAA', groups=(1, 2))] * 2


def test_split_keeps_options_that_take_a_sequence_and_init_cfg():
    try:
        get_attention_class('GC')(in_channels=16)
    except ImportError as err:  # GC reuses mmcv's ContextBlock
        pytest.skip(str(err))
    fusion = ('channel_add', 'channel_mul')
    assert split_attention_cfg(dict(type='GC', fusion_types=fusion), 2) == [
        dict(type='GC', fusion_types=fusion)] * 2
    init_cfg = [dict(type='Constant', val=0, layer='Conv2d'),
                dict(type='Constant', val=1, layer='BatchNorm2d')]
    assert split_attention_cfg(dict(type='SE', init_cfg=init_cfg), 2) == [
        dict(type='SE', init_cfg=init_cfg)] * 2
