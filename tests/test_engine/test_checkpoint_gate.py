"""One gate for every checkpoint file: refused or unreadable files end a run
in one line before anything ran, and a checkpoint of another model too."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from payloads import KINDS, NEEDS_CODE, evil_checkpoint
from testing_utils import load_tool

from mmsa.engine.checkpoints import (check_checkpoint, check_run_checkpoints,
                                     resume_file)
from mmsa.errors import (CheckpointMismatchError, CheckpointNotFoundError,
                         UnreadableCheckpointError, UnsafeCheckpointError)

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs' / 'demo' / 'faster-rcnn_r18-sa_fpn_demo.py'


class Net(nn.Module):

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 8)
        self.norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, classes)


def _weights(model: nn.Module, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) if v.is_floating_point()
            else v.clone() for k, v in model.state_dict().items()}


def test_weights_of_the_model_pass_with_or_without_module_prefix(tmp_path):
    path = tmp_path / 'ok.pth'
    weights = _weights(Net())
    torch.save(dict(state_dict={f'module.{k}': v
                                for k, v in weights.items()}), path)
    loaded = check_checkpoint(str(path), Net(), strict=True)
    assert set(loaded['state_dict']) == {f'module.{k}' for k in weights}


def test_strict_gate_names_missing_and_reshaped_tensors(tmp_path):
    path = tmp_path / 'other.pth'
    weights = _weights(Net(classes=5))
    del weights['norm.weight']
    torch.save(dict(state_dict=weights), path)
    with pytest.raises(CheckpointMismatchError, match=(
            rf"^checkpoint {path} does not fit this config's model \(Net\): "
            r"1 of the model's 8 tensors are not in it \(norm.weight\); 2 "
            r'have another shape \(head.weight: checkpoint \(5, 8\), model '
            r'\(3, 8\)\)\. It was written for another model')):
        check_checkpoint(str(path), Net(), strict=True)
    # load_from also serves fine-tuning to other classes: some fit is enough
    check_checkpoint(str(path), Net(), strict=False)


def test_gate_refuses_a_checkpoint_with_nothing_that_fits(tmp_path):
    path = tmp_path / 'foreign.pth'
    KINDS['other_model'].write(path, tmp_path / 'm', {})
    with pytest.raises(CheckpointMismatchError, match=(
            r'none of its 2 tensors \(encoder.fc.bias, encoder.fc.weight\) '
            r'is a tensor of the model \(backbone.weight, backbone.bias, '
            r'norm.weight, ...\) with the same shape')):
        check_checkpoint(str(path), Net(), strict=False)


def test_resume_needs_a_training_checkpoint(tmp_path):
    path = tmp_path / 'weights_only.pth'
    torch.save(dict(state_dict=_weights(Net())), path)
    with pytest.raises(CheckpointMismatchError, match=(
            rf'^cannot resume from {path}: it is not a training checkpoint '
            r'of mmengine .*give it as load_from instead of --resume')):
        check_checkpoint(str(path), Net(), strict=True, resume=True)
    torch.save(dict(state_dict=_weights(Net()), meta=dict(epoch=2, iter=8)),
               path)
    check_checkpoint(str(path), Net(), strict=True, resume=True)


def _run_cfg(work_dir: Path, **extra) -> Config:
    return Config(dict(work_dir=str(work_dir), model=dict(type='Net'),
                       **extra))


def test_auto_resume_reads_exactly_the_checked_file(tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    cfg = _run_cfg(work, resume=True, load_from=None)
    assert check_run_checkpoints(cfg, Net()) == []  # nothing to resume yet
    assert cfg.load_from is None
    good = work / 'epoch_2.pth'
    torch.save(dict(state_dict=_weights(Net()), meta=dict(epoch=2, iter=8)),
               good)
    (work / 'last_checkpoint').write_text(str(good))
    assert check_run_checkpoints(cfg, Net()) == [str(good)]
    assert cfg.load_from == str(good)
    (work / 'last_checkpoint').write_text('')
    with pytest.raises(UnreadableCheckpointError, match=(
            rf'^cannot resume: {work}/last_checkpoint is empty')):
        resume_file(str(work))


def test_pretrained_files_in_the_model_are_checked(tmp_path):
    path, marker = evil_checkpoint(tmp_path)
    cfg = _run_cfg(tmp_path, load_from=None)
    cfg.model['backbone'] = dict(init_cfg=dict(type='Pretrained',
                                               checkpoint=str(path)))
    with pytest.raises(UnsafeCheckpointError, match=f'Refusing to load '
                       f'{path}'):
        check_run_checkpoints(cfg, None)
    assert not marker.exists()
    cfg.model['backbone'] = dict(pretrained=str(tmp_path / 'gone.pth'))
    with pytest.raises(CheckpointNotFoundError, match='gone.pth does not'):
        check_run_checkpoints(cfg, None)
    # addresses are checked as they are read, not downloaded twice
    cfg.model['backbone'] = dict(pretrained='open-mmlab://resnet50_v1c')
    assert check_run_checkpoints(cfg, None) == []
    # a test run does not initialise weights: Pretrained files are not read
    cfg.model['backbone'] = dict(pretrained=str(tmp_path / 'gone.pth'))
    assert check_run_checkpoints(cfg, None, testing=True) == []


@pytest.fixture(scope='module')
def test_tool():
    pytest.importorskip('mmdet')
    return load_tool('tools/test.py')


@pytest.mark.parametrize('kind', sorted(KINDS))
def test_every_refused_file_ends_tools_test_in_one_line(
        kind, test_tool, tmp_path, monkeypatch, capsys):
    """The whole list through one path, as a user runs it: one line naming
    the file and the reason, exit 1, the runner never built, no payload
    run, failed.json and nothing else in the work dir."""
    from mmsa.engine.cli import run_cli
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    marker, path = tmp_path / 'payload_ran', tmp_path / f'{kind}.pth'
    KINDS[kind].write(path, marker, dict(w=torch.ones(2)))
    work = tmp_path / 'work'

    def no_runner(cfg):
        raise AssertionError('the runner was built')

    monkeypatch.setattr(test_tool, 'build_runner', no_runner)
    monkeypatch.setattr(sys, 'argv', [
        'tools/test.py', str(DEMO), str(path), '--work-dir', str(work)])
    with pytest.raises(SystemExit) as exit_:
        run_cli(test_tool.main, lambda: test_tool.STATE.get('work_dir'))
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'Traceback' not in err, err
    assert str(path) in errors[0] and KINDS[kind].says in errors[0], err
    assert 'weights_only=False' not in errors[0].replace(' ', '')
    if KINDS[kind].says == NEEDS_CODE:
        assert 'If it comes from a source you trust' in errors[0]
    assert not marker.exists()
    assert sorted(p.name for p in work.iterdir()) == ['failed.json']
