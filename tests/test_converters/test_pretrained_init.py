"""Pretrained init of converted files: the log names every attention module
the checkpoint has no tensors for (it keeps its paper initialisation)."""
import logging
from contextlib import contextmanager

import pytest
import torch
from mmengine.logging import MMLogger

pytest.importorskip('mmdet')

from mmsa.models.backbones.det_resnet import AttnResNet  # noqa: E402


@contextmanager
def _captured_log():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _paper_init_records(records):
    return [
        r for r in records
        if 'keep their paper initialisation' in r.getMessage()
    ]


def _save(tmp_path, state_dict, name='ckpt.pth'):
    path = tmp_path / name
    torch.save(dict(state_dict=state_dict, meta=dict(note='test')), path)
    return str(path)


def test_plain_resnet_checkpoint_lists_attention_at_paper_init(tmp_path):
    plain = {
        k: torch.randn(v.shape) if v.is_floating_point() else v
        for k, v in AttnResNet(depth=50).state_dict().items()
    }
    path = _save(tmp_path, plain)
    backbone = AttnResNet(depth=50,
                          attention=dict(type='SA'),
                          init_cfg=dict(type='Pretrained', checkpoint=path))
    with _captured_log() as records:
        backbone.init_weights()
    found = _paper_init_records(records)
    assert len(found) == 1 and found[0].levelno == logging.INFO
    msg = found[0].getMessage()
    assert 'no tensors for 16 of 16 attention modules' in msg
    assert 'layer1.0.sa, layer1.1.sa' in msg and msg.endswith('layer4.2.sa')
    assert torch.equal(backbone.conv1.weight, plain['conv1.weight'])
    assert not backbone.layer1[0].sa.cweight.any()  # paper init: zeros
    assert (backbone.layer1[0].sa.cbias == 1).all()


def test_the_report_reads_the_checkpoint_once(tmp_path, monkeypatch):
    """The init's own load gives the report its keys: the file is read
    once."""
    import mmsa.utils.checkpoint as checkpoint
    path = _save(tmp_path, AttnResNet(depth=18).state_dict())
    reads = []
    safe_load = checkpoint.safe_load
    monkeypatch.setattr(checkpoint, 'safe_load',
                        lambda file, *args, **kwargs: reads.append(file) or
                        safe_load(file, *args, **kwargs))
    backbone = AttnResNet(depth=18, attention='SE',
                          init_cfg=dict(type='Pretrained', checkpoint=path))
    with _captured_log() as records:
        backbone.init_weights()
    assert reads == [path]
    assert 'no tensors for 8 of 8' in _paper_init_records(
        records)[0].getMessage()


def test_checkpoint_with_all_attention_logs_nothing(tmp_path):
    path = _save(tmp_path, AttnResNet(depth=50, attention='ECA').state_dict())
    backbone = AttnResNet(depth=50,
                          attention='ECA',
                          init_cfg=dict(type='Pretrained', checkpoint=path))
    with _captured_log() as records:
        backbone.init_weights()
    assert _paper_init_records(records) == []


def test_detector_checkpoint_with_prefix_warns_on_partial_attention(tmp_path):
    """A whole-model checkpoint (``backbone.`` keys) whose attention covers
    only layer1: the other stages' modules are named, as a warning."""
    source = AttnResNet(depth=50,
                        attention=[dict(type='SE'), None, None, None])
    sd = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    sd['neck.conv.weight'] = torch.zeros(1)
    path = _save(tmp_path, sd)
    backbone = AttnResNet(depth=50,
                          attention='SE',
                          init_cfg=dict(type='Pretrained',
                                        checkpoint=path,
                                        prefix='backbone.'))
    with _captured_log() as records:
        backbone.init_weights()
    found = _paper_init_records(records)
    assert len(found) == 1 and found[0].levelno == logging.WARNING
    msg = found[0].getMessage()
    assert 'no tensors for 13 of 16' in msg
    assert 'layer1.' not in msg and 'layer2.0.se' in msg
    assert torch.equal(backbone.layer1[0].se.fc1.weight,
                       source.layer1[0].se.fc1.weight)


def test_v1c_weights_into_attention_v1c_list_paper_init(tmp_path):
    """The recommended mmseg path: V1c ImageNet weights, attention at
    paper init."""
    pytest.importorskip('mmseg')
    from mmseg.models.backbones import ResNetV1c

    from mmsa.models.backbones.seg_resnet import AttnResNetV1c
    path = _save(tmp_path, ResNetV1c(depth=50).state_dict())
    backbone = AttnResNetV1c(depth=50,
                             attention=dict(type='ECA'),
                             stage_attention='BAM',
                             init_cfg=dict(type='Pretrained', checkpoint=path))
    with _captured_log() as records:
        backbone.init_weights()
    msg = _paper_init_records(records)[0].getMessage()
    assert 'no tensors for 19 of 19' in msg
    assert 'layer1.0.eca' in msg and 'bam1' in msg
