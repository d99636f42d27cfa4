"""What every registered attention does alike: exact gradients, channels_last,
bf16 autocast and torch.compile, bad arguments refused with a fix that
works, and the same module by name, dict or the text of a dict.

Each module's own checks (the paper's forward, parameter counts, special
inputs) are in its test_<module>.py.
"""
import ast
import re

import pytest
from testing_utils import check_gradcheck, randomize_, run_common_checks

from mmsa.attention import ATTENTIONS, build_attention, get_attention_class

# A small instance of each: its options and the input shape of its
# gradient check. GC and NonLocal reuse mmcv's bricks and are skipped where
# mmcv is missing.
SMALL = {
    'SA': (dict(groups=2), (2, 8, 4, 5)),
    'SE': (dict(reduction=2), (2, 8, 3, 4)),
    'ECA': (dict(kernel_size=3), (2, 8, 3, 4)),
    'CBAM': (dict(reduction=2, kernel_size=3), (2, 8, 5, 6)),
    'SGE': (dict(groups=2), (2, 8, 5, 6)),
    'BAM': (dict(reduction=2, dilation=2), (2, 4, 3, 4)),
    'ULSAM': (dict(groups=2), (2, 4, 3, 4)),
    'LKA': (dict(), (1, 2, 4, 5)),
    'GC': (dict(ratio=1 / 4), (2, 8, 3, 4)),
    'NonLocal': (dict(reduction=2), (2, 8, 3, 4)),
}
# Modules with BatchNorm inside: their gradients in training mode too.
WITH_BATCHNORM = ('CBAM', 'BAM', 'ULSAM')

# (id, type, options, channels) for run_common_checks: 64 channels at the
# modules' usual options; LKA at 2 channels, where its random output stays
# O(1) (test_lka.py checks 64 channels with scaled-down weights).
COMMON = [
    ('SA', 'SA', dict(groups=8), 64),
    ('SE', 'SE', dict(reduction=8), 64),
    ('ECA', 'ECA', dict(), 64),
    ('CBAM', 'CBAM', dict(reduction=8), 64),
    ('SGE', 'SGE', dict(groups=8), 64),
    ('BAM-add', 'BAM', dict(fusion='add'), 64),
    ('BAM-mul', 'BAM', dict(fusion='mul'), 64),
    ('ULSAM', 'ULSAM', dict(groups=4), 64),
    ('LKA', 'LKA', dict(), 2),
    ('GC', 'GC', dict(), 64),
    ('NonLocal', 'NonLocal', dict(), 64),
]

# (type, constructor arguments, the error it must raise); a "try X=V" in
# the message must build.
BAD_ARGUMENTS = [
    ('SA', dict(in_channels=96, groups=64),
     r'^SA\(in_channels=96, groups=64\): in_channels must be divisible by '
     r'2\*groups=128; try groups=16 or 48$'),
    ('SA', dict(in_channels=30, groups=4),
     r'^SA\(in_channels=30, groups=4\).*try groups=3 or 5'),
    ('SA', dict(in_channels=64, groups=0),
     r'groups must be a positive int, got 0'),
    ('SA', dict(in_channels=63, groups=1),
     r'in_channels must be a multiple of 2'),
    ('SE', dict(in_channels=8),
     r'^SE\(in_channels=8, reduction=16\): reduction must not exceed '
     r'in_channels.*try reduction=8'),
    ('SE', dict(in_channels=64, divisor=0),
     r'^SE\(.*divisor=0\): divisor must be a positive int'),
    *[('ECA', dict(in_channels=64, kernel_size=k),
       rf'^ECA\(kernel_size={k}, in_channels=64\): kernel_size must be a '
       r'positive odd int.*try kernel_size=') for k in (4, 0, -3, 2.5)],
    ('ECA', dict(in_channels=64, kernel_size='big'),
     r"kernel_size='big'.*'auto'"),
    ('ECA', dict(in_channels=64, kernel_size=129),
     r'^ECA\(in_channels=64, kernel_size=129\): kernel_size must not exceed '
     r'in_channels.*try kernel_size=63 or'),
    ('ECA', dict(in_channels=5, kernel_size=7),
     r'^ECA\(in_channels=5, kernel_size=7\).*try kernel_size=5 or'),
    ('CBAM', dict(in_channels=8),
     r'^CBAM\(in_channels=8, reduction=16, kernel_size=7\): reduction must '
     r'not exceed in_channels.*try reduction=8'),
    *[('CBAM', dict(in_channels=64, kernel_size=k),
       rf'^CBAM\(kernel_size={k}, in_channels=64, reduction=16\): '
       r'kernel_size must be a positive odd int.*try kernel_size=')
      for k in (6, 0, -3)],
    ('SGE', dict(in_channels=96, groups=64),
     r'^SGE\(in_channels=96, groups=64\): in_channels must be divisible by '
     r'groups; try groups=48 or 96$'),
    ('SGE', dict(in_channels=30, groups=4),
     r'^SGE\(in_channels=30, groups=4\).*try groups=3 or 5'),
    ('SGE', dict(in_channels=64, groups=0),
     r'^SGE\(in_channels=64, groups=0\): groups must be a positive int, '
     r'got 0'),
    ('BAM', dict(in_channels=8),
     r'^BAM\(in_channels=8, reduction=16\): reduction must not exceed '
     r'in_channels.*try reduction=8'),
    ('BAM', dict(in_channels=64, fusion='concat'),
     r"^BAM\(fusion='concat', in_channels=64\): unknown fusion 'concat'; "
     r"choose one of \['add', 'mul'\]"),
    ('BAM', dict(in_channels=64, dilation=0),
     r'^BAM\(in_channels=64, dilation=0\): dilation must be a positive int'),
    ('BAM', dict(in_channels=64, num_dilated_convs=1.5),
     r'^BAM\(in_channels=64, num_dilated_convs=1.5\): num_dilated_convs '
     r'must be a positive int, got 1.5'),
    ('ULSAM', dict(in_channels=30, groups=4),
     r'^ULSAM\(in_channels=30, groups=4\): in_channels must be divisible '
     r'by groups; try groups=3 or 5'),
    ('ULSAM', dict(in_channels=64, groups=0),
     r'^ULSAM\(in_channels=64, groups=0\): groups must be a positive int, '
     r'got 0'),
    *[('LKA', dict(in_channels=c),
       rf'^LKA\(in_channels={c}\): in_channels must be a positive int')
      for c in (0, -4, 2.5)],
    ('GC', dict(in_channels=8, ratio=1 / 16),
     r'^GC\(in_channels=8, ratio=0.0625\): in_channels \* ratio must be >= '
     r'1 .*try ratio=0.125'),
    ('NonLocal', dict(in_channels=64, mode='softmax'),
     r"^NonLocal\(mode='softmax', in_channels=64\): unknown mode "
     r"'softmax'"),
]


def _class(name: str) -> type:
    cls = get_attention_class(name)
    try:
        options, shape = SMALL[name]
        cls(in_channels=shape[1], **options)
    except ImportError as err:  # GC / NonLocal without mmcv
        pytest.skip(str(err))
    return cls


def test_every_registered_attention_is_covered():
    assert set(SMALL) == set(ATTENTIONS)
    assert {name for _, name, _, _ in COMMON} == set(ATTENTIONS)
    assert {name for name, _, _ in BAD_ARGUMENTS} == set(ATTENTIONS)


@pytest.mark.parametrize('name', sorted(SMALL))
def test_gradients_match_finite_differences_in_float64(name):
    options, shape = SMALL[name]
    module = randomize_(_class(name)(shape[1], **options))
    modes = (False, True) if name in WITH_BATCHNORM else (False, )
    for train in modes:
        check_gradcheck(module.train(train), shape)


@pytest.mark.parametrize('name,options,channels',
                         [case[1:] for case in COMMON],
                         ids=[case[0] for case in COMMON])
def test_channels_last_autocast_and_compile(name, options, channels):
    cls = _class(name)
    run_common_checks(lambda c: cls(c, **options), channels=channels)


@pytest.mark.parametrize(
    'name,kwargs,message', BAD_ARGUMENTS,
    ids=[f'{n}-{"-".join(f"{k}={v}" for k, v in kw.items())}'
         for n, kw, _ in BAD_ARGUMENTS])
def test_bad_arguments_are_refused_with_a_fix_that_builds(
        name, kwargs, message):
    cls = _class(name)
    with pytest.raises(ValueError, match=message) as info:
        cls(**kwargs)
    fix = re.search(r'try (\w+)=([^\s;]+)', str(info.value))
    if fix is not None:
        option, value = fix.group(1), ast.literal_eval(fix.group(2))
        cls(**dict(kwargs, **{option: value}))


@pytest.mark.parametrize('name', sorted(SMALL))
def test_built_alike_by_name_dict_and_text(name):
    cls = _class(name)
    options, shape = SMALL[name]
    channels = shape[1]
    assert type(build_attention(name, 256)) is cls
    by_dict = build_attention(dict(type=name, **options), channels)
    text = ', '.join([f'type={name!r}'] +
                     [f'{k}={v!r}' for k, v in options.items()])
    by_text = build_attention(f'dict({text})', channels)
    for module in (by_dict, by_text):
        assert type(module) is cls
        for option, value in options.items():
            assert getattr(module, option, value) == value
    assert by_text.extra_repr() == by_dict.extra_repr()
    assert {k: v.shape for k, v in by_text.state_dict().items()} == \
        {k: v.shape for k, v in by_dict.state_dict().items()}
    # the attribute name in a block (``layer1.0.sa``)
    assert re.fullmatch(r'[a-z]+', cls._abbr_)
