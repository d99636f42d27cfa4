"""Each source's naming converts into AttnResNet with identical features."""
import os
import subprocess
import sys
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

import pytest
import torch
from source_models import (MMPretrainClassifier, MMPretrainSE, OfficialECA,
                           OfficialSA, SourceResNet, TimmSE,
                           randomize_network_)
from testing_utils import assert_close

pytest.importorskip('mmdet')

from mmsa.converters import (
    SOURCES,
    ConversionError,  # noqa: E402
    DeepStemError,
    ShapeMismatchError,
    WrongSourceError,
    convert)
from mmsa.models.backbones.det_resnet import AttnResNet  # noqa: E402
from mmsa.utils import safe_load  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ECA_K = (3, 5, 5, 7)  # the released ECA-ResNet-50


def _sa_resnet(**kwargs):
    return SourceResNet(lambda c, s: OfficialSA(c, 64), 'sa', **kwargs)


def _convert_file(tmp_path, source, src_obj, **kwargs):
    """Save like the source, convert as the tool does; the mmengine file."""
    src = tmp_path / 'src.pth.tar'
    torch.save(src_obj, src)
    state_dict, meta, report = convert(source, safe_load(str(src)), **kwargs)
    dst = tmp_path / 'converted.pth'
    torch.save(dict(state_dict=state_dict, meta=meta), dst)
    return dst, meta, report


def _load_backbone(path, meta):
    cfg = dict(meta['backbone'])
    assert cfg.pop('type') == 'AttnResNet'
    attention = cfg.get('attention')
    if isinstance(attention, dict) and attention.get('type') == 'SA':
        # These tests check the key mapping: SA's reference path sums as the
        # official code does. Fused vs reference is tests/test_ops' job.
        cfg['attention'] = dict(attention, impl='reference')
    backbone = AttnResNet(**cfg,
                          init_cfg=dict(type='Pretrained',
                                        checkpoint=str(path)))
    backbone.init_weights()
    return backbone.eval()


def _assert_same_features(source_model, backbone):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = source_model.features(x)
        actual = backbone(x)
    assert len(actual) == 4
    for a, e in zip(actual, expected):
        assert e.abs().max() > 1e-2  # the features are not degenerate
        assert_close(a, e, atol=1e-5)


def test_official_sa_net_checkpoint_gives_same_features(tmp_path):
    model = randomize_network_(_sa_resnet())
    # The released file: a .pth.tar dict, DataParallel's module. prefix.
    official = dict(epoch=100,
                    arch='sa_resnet50',
                    best_acc1=torch.tensor(77.7),
                    state_dict={
                        f'module.{k}': v
                        for k, v in model.state_dict().items()
                    })
    path, meta, report = _convert_file(tmp_path, 'sa-net', official)
    assert meta['mmsa_converted_from'] == 'sa-net'
    assert meta['backbone'] == dict(type='AttnResNet',
                                    depth=50,
                                    attention=dict(type='SA', groups=64))
    assert report.dropped == ['fc.weight', 'fc.bias']
    assert report.missing == [] and report.attention_at_init == []
    _assert_same_features(model, _load_backbone(path, meta))


def test_official_eca_net_checkpoint_records_kernel_sizes(tmp_path):
    model = randomize_network_(
        SourceResNet(lambda c, s: OfficialECA(ECA_K[s]), 'eca'))
    official = dict(epoch=100,
                    arch='eca_resnet50',
                    state_dict={
                        f'module.{k}': v
                        for k, v in model.state_dict().items()
                    })
    path, meta, report = _convert_file(tmp_path, 'eca-net', official)
    assert meta['eca_kernel_sizes'] == list(ECA_K)
    assert meta['backbone']['attention'] == [
        dict(type='ECA', kernel_size=k) for k in ECA_K
    ]
    assert sum(k.endswith('eca.conv.weight') for k in report.converted) == 16
    _assert_same_features(model, _load_backbone(path, meta))


def test_timm_seresnet_checkpoint_gives_same_features(tmp_path):
    model = randomize_network_(
        SourceResNet(lambda c, s: TimmSE(c, c // 16), 'se'))
    path, meta, report = _convert_file(tmp_path, 'timm-seresnet',
                                       model.state_dict())
    assert meta['backbone']['attention'] == dict(type='SE', reduction=16)
    assert report.dropped == ['fc.weight', 'fc.bias']
    _assert_same_features(model, _load_backbone(path, meta))


def test_mmpretrain_seresnet_checkpoint_gives_same_features(tmp_path):
    model = randomize_network_(
        MMPretrainClassifier(attn=lambda c, s: MMPretrainSE(c, c // 16),
                             attn_name='se_layer'))
    ckpt = dict(meta=dict(mmpretrain_version='1.2.0'),
                state_dict=model.state_dict())
    path, meta, report = _convert_file(tmp_path, 'mmpretrain-seresnet', ckpt)
    assert meta['backbone']['attention'] == dict(type='SE', reduction=16)
    assert report.dropped == ['head.fc.weight', 'head.fc.bias']
    assert report.missing == []
    _assert_same_features(model, _load_backbone(path, meta))


def test_torchvision_resnet_gives_same_features(tmp_path):
    model = randomize_network_(SourceResNet())
    path, meta, report = _convert_file(tmp_path, 'torchvision',
                                       model.state_dict())
    assert meta['backbone'] == dict(type='AttnResNet',
                                    depth=50,
                                    attention=None)
    assert report.missing == []
    _assert_same_features(model, _load_backbone(path, meta))


def test_torchvision_into_attention_backbone_reports_paper_init():
    model = SourceResNet()
    _, meta, report = convert('torchvision',
                              model.state_dict(),
                              attention=dict(type='SA', groups=64))
    assert len(report.attention_at_init) == 16
    assert report.attention_at_init[0] == 'layer1.0.sa'
    assert len(report.missing) == 16 * 6  # cweight..gn.bias
    assert '16 attention modules keep their paper initialisation' in \
        report.format()


def test_attention_in_last_blocks_only_is_read_from_the_keys():
    model = _sa_resnet(last_only=True)
    _, meta, _ = convert('sa-net', dict(state_dict=model.state_dict()))
    assert meta['backbone']['attention_blocks'] == 'last'


def test_shape_mismatch_names_key_and_both_shapes():
    sd = _sa_resnet().state_dict()
    sd['layer2.1.conv2.weight'] = torch.zeros(128, 128, 1, 1)
    with pytest.raises(ShapeMismatchError) as err:
        convert('sa-net', sd)
    assert ('layer2.1.conv2.weight: checkpoint (128, 128, 1, 1) vs backbone '
            '(128, 128, 3, 3)') in str(err.value)


def test_wrong_source_suggests_the_right_one():
    sd = SourceResNet(lambda c, s: TimmSE(c, c // 16), 'se').state_dict()
    with pytest.raises(WrongSourceError,
                       match='looks like --from '
                       'timm-seresnet'):
        convert('sa-net', sd)
    # A checkpoint with attention is not a plain torchvision ResNet.
    with pytest.raises(WrongSourceError, match='--from timm-seresnet'):
        convert('torchvision', sd)


def test_unknown_source_and_wrong_depth_are_refused():
    sd = SourceResNet().state_dict()
    with pytest.raises(ConversionError, match='choose one of'):
        convert('resnet-from-nowhere', sd)
    with pytest.raises(ConversionError, match='pass --depth 50'):
        convert('torchvision', sd, depth=101)


def test_v1c_target_explains_what_maps_and_the_recommended_path():
    with pytest.raises(DeepStemError) as err:
        convert('torchvision', SourceResNet().state_dict(), target='v1c')
    msg = str(err.value)
    assert 'conv1.weight (64, 3, 7, 7)' in msg and 'stem.0' in msg
    assert 'open-mmlab://resnet50_v1c' in msg and 'AttnResNetSeg' in msg


def test_sources_are_listed_for_the_tool():
    assert set(SOURCES) == {
        'sa-net', 'eca-net', 'timm-seresnet', 'mmpretrain-seresnet',
        'torchvision'
    }


def _load_tool():
    spec = spec_from_file_location(
        'convert_weights', REPO / 'tools/model_converters/convert_weights.py')
    tool = module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _run_tool(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, 'tools/model_converters/convert_weights.py', *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300)


def test_tool_converts_and_refuses_without_traceback(tmp_path):
    sd = SourceResNet(lambda c, s: OfficialSA(c, 64), 'sa').state_dict()
    src = tmp_path / 'sa_resnet50.pth.tar'
    torch.save(dict(state_dict={f'module.{k}': v for k, v in sd.items()}), src)
    dst = tmp_path / 'out' / 'sa_r50_mmsa.pth'
    done = _run_tool('--from', 'sa-net', str(src), str(dst))
    assert done.returncode == 0, done.stderr
    assert 'dropped       2 tensors: fc.weight, fc.bias' in done.stdout
    assert 'missing       0 tensors' in done.stdout
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['mmsa_converted_from'] == 'sa-net'
    assert 'layer1.0.sa.cweight' in saved['state_dict']
    assert not any(
        k.startswith(('module.', 'backbone.', 'fc.'))
        for k in saved['state_dict'])

    # User errors end with one message, no traceback (in-process: the tool's
    # main() exits with it).
    with pytest.raises(SystemExit, match='looks like --from sa-net'):
        _load_tool().main(
            ['--from', 'eca-net',
             str(src), str(tmp_path / 'x.pth')])
    assert not (tmp_path / 'x.pth').exists()
