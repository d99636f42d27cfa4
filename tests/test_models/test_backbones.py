"""Attention ResNets for mmdet and mmseg against the frameworks' own."""
import pytest
import torch
from testing_utils import num_params, official_sa, ops_run, randomize_

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from mmdet.models.backbones import ResNet as DetResNet  # noqa: E402
from mmseg.models.backbones import ResNetV1c as SegResNetV1c  # noqa: E402

from mmsa.attention import (BAM, CBAM, EfficientChannelAttention,  # noqa
                            ShuffleAttention, SqueezeExcitation)
from mmsa.errors import ConfigError, ConfigKeyError, ConfigTypeError  # noqa
from mmsa.models.backbones.det_resnet import AttnResNet  # noqa: E402
from mmsa.ops import cpu_kernel_isa  # noqa: E402
from mmsa.models.backbones.seg_resnet import AttnResNetV1c  # noqa: E402

R50_CHANNELS = (256, 512, 1024, 2048)


def _same_init(cls_a, cls_b, **kwargs):
    torch.manual_seed(0)
    a = cls_a(**kwargs)
    a.init_weights()
    torch.manual_seed(0)
    b = cls_b(**kwargs)
    b.init_weights()
    return a, b


@pytest.mark.parametrize('ours,theirs,depth', [
    (AttnResNet, DetResNet, 50),
    (AttnResNet, DetResNet, 18),
    (AttnResNetV1c, SegResNetV1c, 50),
])
def test_attention_none_is_bit_identical_to_framework_resnet(
        ours, theirs, depth):
    a, b = _same_init(ours, theirs, depth=depth)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # zero_init_residual survived our block classes
    last = 'norm3' if depth >= 50 else 'norm2'
    assert torch.all(getattr(a.layer1[0], last).weight == 0)
    x = torch.randn(2, 3, 64, 80)
    for mode in (True, False):
        a.train(mode)
        b.train(mode)
        for fa, fb in zip(a(x), b(x)):
            assert torch.equal(fa, fb)


@pytest.mark.parametrize('depth,expansion', [(18, 1), (34, 1), (50, 4),
                                             (101, 4), (152, 4)])
def test_outputs_and_strides_for_each_depth(depth, expansion):
    attention = dict(type='SE', reduction=16)
    model = AttnResNet(depth=depth, attention=attention).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = model(x)
    assert len(outs) == 4
    for i, out in enumerate(outs):
        stride = 4 * 2**i
        assert out.shape == (1, 64 * 2**i * expansion, 64 // stride,
                             96 // stride)
    blocks = {18: 8, 34: 16, 50: 16, 101: 33, 152: 50}[depth]
    assert model.attention_summary() == {'se': blocks}


@pytest.mark.parametrize('attention,extra', [
    (dict(type='SA'), 708),
    (dict(type='SE'), 2_530_992),
    (dict(type='ECA', kernel_size=(3, 5, 5, 7)), 80),
    ([dict(type='ECA', kernel_size=k) for k in (3, 5, 5, 7)], 80),
])
def test_resnet50_parameter_overhead_equals_official(attention, extra):
    plain = num_params(DetResNet(depth=50))
    assert num_params(AttnResNet(depth=50, attention=attention)) - plain == \
        extra


def test_stock_mmdet_resnet_takes_sa_as_plugin():
    model = DetResNet(
        depth=50,
        plugins=[dict(cfg=dict(type='SA'), stages=(True, ) * 4,
                      position='after_conv3')])
    model.eval()  # mmdet's train() returns None
    assert isinstance(model.layer1[0].sa, ShuffleAttention)
    assert num_params(model) - num_params(DetResNet(depth=50)) == 708
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == list(R50_CHANNELS)


def test_attention_is_after_last_norm_before_residual_add():
    model = AttnResNet(depth=50, attention=dict(type='SA', groups=8)).eval()
    randomize_(model)
    block = model.layer2[0]
    seen = {}
    # clone: the block ends in place, as mmdet's does
    block.norm3.register_forward_hook(
        lambda m, i, o: seen.update(n3=o.clone()))
    block.sa.register_forward_hook(
        lambda m, i, o: seen.update(sa_in=i[0].clone()))
    x = torch.randn(1, 256, 16, 16)
    with torch.no_grad():
        out = block(x)
        sa = block.sa
        expected = torch.relu(
            official_sa(seen['n3'], sa.groups, sa.cweight, sa.cbias,
                        sa.sweight, sa.sbias, sa.gn.weight, sa.gn.bias) +
            block.downsample(x))
    assert torch.equal(seen['sa_in'], seen['n3'])
    assert torch.allclose(out, expected, atol=1e-5)


def _assert_all_close(actual, expected, rtol=1e-9):
    for a, b in zip(actual, expected, strict=True):
        assert a.shape == b.shape
        scale = b.abs().max().item()
        assert (a - b).abs().max().item() <= rtol * max(scale, 1.0)


def _forward_backward(model, x):
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    outs = model(x)
    gen = torch.Generator().manual_seed(1)
    sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum()
        for o in outs).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return [o.detach() for o in outs], x.grad, grads


@pytest.mark.parametrize('with_cp', [False, True])
@pytest.mark.parametrize('train', [True, False])
def test_fused_sa_block_end_equals_mmdets_plugin_block(with_cp, train):
    """With SA after conv3, mmsa's blocks end in the fused block end (BN,
    SA, add and ReLU in the C++ kernels' passes); mmdet's own Bottleneck
    with SA as a plugin does the four as separate ops. Outputs and every
    gradient must agree (float64: the kernels' double path, so that 50
    layers do not amplify rounding)."""
    ours = AttnResNet(depth=50, attention=dict(type='SA', groups=8),
                      with_cp=with_cp)
    theirs = DetResNet(depth=50, with_cp=with_cp, plugins=[
        dict(cfg=dict(type='SA', groups=8), stages=(True, ) * 4,
             position='after_conv3')])
    randomize_(ours).double().train(train)
    theirs.double().train(train)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    if not train:
        with torch.no_grad():
            _assert_all_close(ours(x), theirs(x))
        return
    ref_outs, ref_dx, ref_grads = _forward_backward(theirs, x)
    got = []
    # twice: a second step gives the same (nothing kept from the first)
    for _ in range(2):
        ran = ops_run(lambda: got.append(_forward_backward(ours, x)))
        outs, dx, grads = got.pop()
        if cpu_kernel_isa() is not None:
            assert 'BlockEndFused' in ran
        _assert_all_close(outs, ref_outs)
        _assert_all_close([dx], [ref_dx])
        assert set(grads) == set(ref_grads)
        _assert_all_close(grads.values(), ref_grads.values())


def test_basic_block_sa_end_fused_equals_reference():
    """ResNet-18/34 blocks (no mmdet plugins there): fused vs the
    reference path's SA, add and ReLU as three ops."""
    fused = randomize_(AttnResNet(depth=18, attention=dict(type='SA',
                                                           groups=8)))
    ref = AttnResNet(depth=18, attention=dict(type='SA', groups=8,
                                              impl='reference'))
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    outs, dx, grads = _forward_backward(fused.double(), x)
    got = []
    ran = ops_run(lambda: got.append(_forward_backward(ref.double(), x)))
    ref_outs, ref_dx, ref_grads = got.pop()
    assert 'mmsa::sa_fused' not in ran
    _assert_all_close(outs, ref_outs)
    _assert_all_close([dx], [ref_dx])
    _assert_all_close(grads.values(), ref_grads.values())


def test_official_checkpoint_key_names():
    keys = AttnResNet(depth=50, attention=dict(type='SA')).state_dict()
    assert 'layer1.0.sa.cweight' in keys and 'layer4.2.sa.gn.bias' in keys
    eca = AttnResNet(depth=50, attention=dict(type='ECA', kernel_size=3))
    assert 'layer3.5.eca.conv.weight' in eca.state_dict()


@pytest.mark.parametrize('cls', [AttnResNet, AttnResNetV1c])
def test_two_attentions_at_one_position_both_run(cls):
    """mmseg 1.2.2's forward_plugin feeds every plugin the block's x, so
    only the last one takes effect; each must get its predecessor's output."""
    model = cls(
        depth=50,
        attention=dict(type='SE', reduction=16),
        plugins=[dict(cfg=dict(type='ECA'), position='after_conv3')])
    block = randomize_(model).eval().layer1[0]
    seen = {}
    block.eca.register_forward_hook(lambda m, i, o: seen.update(eca=o))
    block.se.register_forward_hook(lambda m, i, o: seen.update(se_in=i[0]))
    with torch.no_grad():
        block(torch.randn(1, 64, 8, 8))
    assert torch.equal(seen['se_in'], seen['eca'])


def test_attention_blocks_last_and_stage_mask():
    model = AttnResNet(depth=50, attention=dict(type='SA'),
                       attention_blocks='last',
                       attention_stages=(False, True, True, True))
    assert model.attention_summary() == {'sa': 3}
    assert not hasattr(model.layer1[2], 'sa')
    assert hasattr(model.layer2[3], 'sa') and not hasattr(model.layer2[2],
                                                          'sa')


@pytest.mark.parametrize('attention', [
    [dict(type='ECA', kernel_size=k) for k in (3, 5, 5, 7)],
    dict(type='ECA', kernel_size=(3, 5, 5, 7)),
    "dict(type='ECA', kernel_size=[3, 5, 5, 7])",
], ids=['config-per-stage', 'value-per-stage', 'text'])
def test_per_stage_attention_configs_and_option_values(attention):
    model = AttnResNet(depth=50, attention=attention)
    ks = [[block.eca.kernel_size for block in getattr(model, f'layer{i}')]
          for i in range(1, 5)]
    assert ks == [[3] * 3, [5] * 4, [5] * 6, [7] * 3]


def test_per_stage_option_values_need_one_per_stage():
    with pytest.raises(ConfigError, match=(
            r'^attention: ECA: kernel_size=\(3, 5, 5\) has 3 values for 4 '
            r'stages; give one kernel_size for all stages or one per '
            r'stage$')):
        AttnResNet(depth=50, attention=dict(type='ECA',
                                            kernel_size=(3, 5, 5)))


def test_per_stage_option_values_follow_the_stage_mask():
    model = AttnResNet(depth=50, attention=dict(type='SA',
                                                groups=(8, 16, 32, 64)),
                       attention_stages='FTTT')
    assert not hasattr(model.layer1[0], 'sa')
    assert [getattr(model, f'layer{i}')[0].sa.groups
            for i in (2, 3, 4)] == [16, 32, 64]


@pytest.mark.parametrize('position,channels', [('after_conv1', 64),
                                               ('after_conv2', 64),
                                               ('after_conv3', 256)])
def test_attention_positions(position, channels):
    model = AttnResNet(depth=50, attention=dict(type='SE'),
                       attention_position=position)
    assert model.layer1[0].se.in_channels == channels
    model.eval()(torch.randn(1, 3, 32, 32))


def test_basicblock_takes_attention():
    model = randomize_(AttnResNet(depth=18, attention=dict(type='ECA')))
    assert isinstance(model.layer3[1].eca, EfficientChannelAttention)
    assert model.attention_summary() == {'eca': 8}
    outs = model.eval()(torch.randn(2, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 128, 256, 512]


def test_frozen_stages_freeze_their_attention_too():
    model = AttnResNet(depth=50, frozen_stages=2, attention=dict(type='CBAM'),
                       stage_attention=dict(type='BAM'))
    model.train()
    for name, p in model.named_parameters():
        frozen = name.startswith(('conv1', 'bn1', 'layer1', 'layer2',
                                  'bam1', 'bam2'))
        assert p.requires_grad != frozen, name
    assert not model.layer2[0].cbam.training and not model.bam2.training
    assert model.layer3[0].cbam.training
    assert model.bam3.training


def test_norm_eval_puts_attention_batchnorm_in_eval():
    model = AttnResNet(depth=50, attention=dict(type='CBAM'),
                       norm_eval=True).train()
    bns = [m for m in model.layer4[0].cbam.modules()
           if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)


def test_stage_attention_bam_between_stages():
    model = randomize_(AttnResNet(depth=50,
                                  stage_attention=dict(type='BAM'))).eval()
    assert model.stage_attention_names == ['bam1', 'bam2', 'bam3', None]
    assert isinstance(model.bam3, BAM) and model.bam3.in_channels == 1024
    seen = {}
    model.layer2.register_forward_hook(lambda m, i, o: seen.update(l2=o))
    model.bam2.register_forward_hook(lambda m, i, o: seen.update(b2=o))
    model.layer3.register_forward_hook(lambda m, i, o: seen.update(l3=i[0]))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    assert torch.equal(seen['l3'], seen['b2'])
    assert not torch.equal(seen['l2'], seen['b2'])


def test_with_cp_gives_same_gradients():
    a, b = _same_init(AttnResNet, AttnResNet, depth=18,
                      attention=dict(type='SA', groups=4))
    b.with_cp = True
    for layer in b.res_layers:
        for block in getattr(b, layer):
            block.with_cp = True
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    grads = []
    for model in (a, b):
        model.train()
        sum(o.sum() for o in model(x)).backward()
        grads.append([p.grad.clone() for p in model.parameters()
                      if p.grad is not None])
    for ga, gb in zip(*grads):
        assert torch.allclose(ga, gb, atol=1e-6)


def test_dilated_output_stride_8_for_segmentation():
    model = AttnResNetV1c(depth=50, strides=(1, 2, 1, 1),
                          dilations=(1, 1, 2, 4), contract_dilation=True,
                          attention=dict(type='SA')).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 8, 8]
    assert model.layer4[1].conv2.dilation == (4, 4)
    assert model.layer4[0].conv2.dilation == (2, 2)  # contracted
    assert hasattr(model, 'stem') and not hasattr(model, 'conv1')


def test_pretrained_plain_weights_load_and_attention_keeps_init(tmp_path):
    torch.manual_seed(1)
    plain = randomize_(DetResNet(depth=50))
    path = tmp_path / 'r50.pth'
    torch.save({'state_dict': plain.state_dict()}, path)
    model = AttnResNet(depth=50, attention=dict(type='SA'),
                       init_cfg=dict(type='Pretrained',
                                     checkpoint=str(path)))
    model.init_weights()
    ours = model.state_dict()
    for k, v in plain.state_dict().items():
        assert torch.equal(ours[k], v), k
    assert torch.all(model.layer1[0].sa.cweight == 0)
    assert torch.all(model.layer1[0].sa.cbias == 1)


@pytest.mark.parametrize('kwargs,message', [
    (dict(attention_position='after_conv4'),
     r"attention_position='after_conv4' is unknown; choose one of"),
    (dict(attention_blocks='first'), r"each entry must be one of"),
    (dict(attention_stages=(True, True)),
     r'attention_stages has 2 entries but the backbone has num_stages=4'),
    (dict(attention=[dict(type='SE')] * 3),
     r'attention has 3 entries but the backbone has num_stages=4'),
])
def test_bad_backbone_options_are_explained(kwargs, message):
    kwargs.setdefault('attention', dict(type='SE'))
    with pytest.raises(ValueError, match=message):
        AttnResNet(depth=50, **kwargs)


def test_bad_attention_in_backbone_names_the_value():
    with pytest.raises(KeyError, match="Unknown attention type 'SAA'"):
        AttnResNet(depth=50, attention=dict(type='SAA'))
    with pytest.raises(ValueError, match=r'SA\(in_channels=64, groups=64\)'):
        AttnResNet(depth=18, attention=dict(type='SA', groups=64))
    with pytest.raises(KeyError, match='invalid depth 42'):
        AttnResNet(depth=42)


@pytest.mark.parametrize('mask,stages', [
    ('TFTF', [1, 3]), ('fttt', [2, 3, 4]),
    ((0, 1, 1, 0), [2, 3]), ([True, False, False, True], [1, 4])])
def test_stage_mask_letters_are_read_as_letters_not_truthy(mask, stages):
    model = AttnResNet(depth=50, attention=dict(type='SE'),
                       attention_stages=mask)
    with_se = [i + 1 for i in range(4)
               if hasattr(getattr(model, f'layer{i + 1}')[0], 'se')]
    assert with_se == stages


@pytest.mark.parametrize('mask,message', [
    (True, r'attention_stages=True is not a stage mask; give one bool per '
     r'stage, e.g. \(True, True, True, True\)'),
    ('all', r"attention_stages='all' is not a stage mask"),
    ('TFT', r"attention_stages='TFT' is not a stage mask.*'FTTT'"),
    ('TXTF', r"attention_stages='TXTF' is not a stage mask"),
    (('T', 'F', 'T', 'F'), r"entries must be True/False, got 'T'"),
    ((1, 0, 2, 1), r'entries must be True/False, got 2'),
])
def test_stage_mask_that_reads_ambiguously_is_refused(mask, message):
    with pytest.raises(ValueError, match=message):
        AttnResNet(depth=50, attention=dict(type='SE'),
                   attention_stages=mask)


@pytest.mark.parametrize('kwargs,key', [
    (dict(attention_stages=(False, True, True, True)), 'attention'),
    (dict(stage_attention_stages='TTFF'), 'stage_attention'),
])
def test_stage_mask_without_its_attention_is_an_error(kwargs, key):
    with pytest.raises(ValueError, match=rf'{key}_stages=.* is set but '
                       rf'{key} is None, so no stage would get attention; '
                       rf"set {key}=dict\(type='SA'\)"):
        AttnResNet(depth=50, **kwargs)


@pytest.mark.parametrize('kwargs,message', [
    (dict(attention_position='after_conv2'),
     r"^attention_position='after_conv2' is set but attention is None, so "
     r"no stage would get attention; set attention=dict\(type='SA'\) \(or "
     r'another type\) or remove attention_position'),
    (dict(attention_blocks='last'),
     r"^attention_blocks='last' is set but attention is None"),
    (dict(attention_stages='FTTT', attention_blocks='last'),
     r"^attention_stages='FTTT', attention_blocks='last' are set but "
     r'attention is None.* or remove attention_stages and attention_blocks '
     r'\(attention_stages=None where a base config sets it\)'),
])
def test_placement_without_attention_is_refused_naming_the_key(
        kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AttnResNet(depth=18, **kwargs)


@pytest.mark.parametrize('kwargs,message', [
    (dict(attention=dict(type='SE'), attention_stages='FFFF'),
     r"^attention_stages='FFFF' selects no stage, so attention is built "
     r"nowhere; select the stages to get it \(e.g. attention_stages="
     r"'FTTT'\) or set attention=None"),
    (dict(attention=dict(type='SE'),
          attention_stages=(True, False, False, False)),
     None),
    (dict(attention=[None] * 4),
     r'^attention=\[None, None, None, None\] gives no stage an attention; '
     r'set attention=None'),
    (dict(attention=[dict(type='SE'), None, None, None],
          attention_stages='FTTT'),
     r"^attention_stages='FTTT' selects no stage"),
    (dict(stage_attention=dict(type='BAM'), stage_attention_stages='FFFF'),
     r"^stage_attention_stages='FFFF' selects no stage"),
])
def test_attention_that_would_be_built_nowhere_is_refused(kwargs, message):
    if message is None:  # one stage is enough
        model = AttnResNet(depth=18, **kwargs)
        assert model.attention_summary() == {'se': 2}
        return
    with pytest.raises(ConfigError, match=message):
        AttnResNet(depth=18, **kwargs)


def test_default_placement_given_explicitly_still_builds():
    default = AttnResNet(depth=18, attention=dict(type='SE'))
    explicit = AttnResNet(depth=18, attention=dict(type='SE'),
                          attention_position='after_conv3',
                          attention_blocks='all')
    assert explicit.attention_position == default.attention_position == \
        'after_conv3'
    assert explicit.attention_summary() == default.attention_summary() == \
        {'se': 8}


def test_attention_errors_are_config_errors_that_name_the_block():
    with pytest.raises(ConfigError, match=r'^layer1\.0, after_conv3 \(64 '
                       r'channels\): SA\(in_channels=64, groups=64\)'):
        AttnResNet(depth=18, attention=dict(type='SA', groups=64))
    with pytest.raises(ConfigTypeError, match=r"^layer1\.0, after_conv3 "
                       r"\(64 channels\): ECA: unknown option\(s\) "
                       r"\['kernal_size'\]"):
        AttnResNet(depth=18, attention=dict(type='ECA', kernal_size=3))
    with pytest.raises(ConfigKeyError, match="Unknown attention type 'SAA'"):
        AttnResNet(depth=18, attention=dict(type='SAA'))
    with pytest.raises(ConfigError, match=r'^stage_attention after layer1 '
                       r'\(64 channels\): BAM'):
        AttnResNet(depth=18, stage_attention=dict(type='BAM',
                                                  reduction=1000))


@pytest.mark.parametrize('attention,plugin,names', [
    ('SE', dict(type='SE'), ('se2', 'se')),
    ('GC', dict(type='ContextBlock', ratio=1. / 16), ('gc', 'context_block')),
])
def test_attention_and_same_plugin_at_one_position_is_refused(
        attention, plugin, names):
    plugins = [dict(cfg=plugin, position='after_conv3')]
    with pytest.raises(ValueError, match=(
            rf'attention \(layer1\.0\.{names[0]}: \w+\) and a plugins '
            rf'entry \(layer1\.0\.{names[1]}: \w+\) are both at '
            r'after_conv3.*remove that plugins entry or set attention=None')):
        AttnResNet(depth=50, attention=dict(type=attention), plugins=plugins)


def test_same_attention_as_plugin_at_another_position_is_allowed():
    model = AttnResNet(
        depth=50, attention=dict(type='SE'),
        plugins=[dict(cfg=dict(type='SE'), position='after_conv2')])
    block = model.layer1[0]
    assert block.after_conv2_plugin_names == ['se']
    assert block.attention_names['after_conv3'] == ['se2']
