"""One refused checkpoint through every way a user hands mmsa a file: the
run ends with one line naming the file and why, nothing of it ran, and
nothing of a run was written."""
import os
import shutil

import pytest
from e2e_utils import DET_CONFIGS, run_tool
from payloads import KINDS, NEEDS_CODE

from mmsa.engine.workdir import LOCK_FILE

CONFIG = str(DET_CONFIGS['faster_rcnn'])
LOAD_CHECKPOINT = (
    'import sys, torch, mmsa; from mmengine.runner import load_checkpoint; '
    'load_checkpoint(torch.nn.Linear(2, 1), sys.argv[1])')


def _auto_resume(path, work):
    work.mkdir()
    shutil.copy(path, work / path.name)
    (work / 'last_checkpoint').write_text(str(work / path.name))
    return ['tools/train.py', CONFIG, '--work-dir', str(work), '--resume'], \
        work / path.name


PATHS = {
    'test': lambda path, work, image: [
        'tools/test.py', CONFIG, str(path), '--work-dir', str(work)],
    'resume': lambda path, work, image: [
        'tools/train.py', CONFIG, '--work-dir', str(work), '--resume',
        str(path)],
    'auto_resume': None,  # _auto_resume
    'load_from': lambda path, work, image: [
        'tools/train.py', CONFIG, '--work-dir', str(work), '--cfg-options',
        f'load_from={path}'],
    'init_cfg': lambda path, work, image: [
        'tools/train.py', CONFIG, '--work-dir', str(work), '--cfg-options',
        'model.backbone.init_cfg.type=Pretrained',
        f'model.backbone.init_cfg.checkpoint={path}'],
    'visualize_attention': lambda path, work, image: [
        'tools/analysis_tools/visualize_attention.py', CONFIG, str(path),
        str(image), '--out-dir', str(work)],
    'convert_weights': lambda path, work, image: [
        'tools/model_converters/convert_weights.py', '--from', 'torchvision',
        str(path), str(work / 'converted.pth')],
    'mmengine_load_checkpoint': lambda path, work, image: [
        '-c', LOAD_CHECKPOINT, str(path)],
}


@pytest.mark.slow
@pytest.mark.parametrize('way', sorted(PATHS))
def test_refused_checkpoint_ends_every_path_in_one_line(way, tiny_data,
                                                        tmp_path):
    marker, path = tmp_path / 'payload_ran', tmp_path / 'evil.pth'
    KINDS['exec_zip'].write(path, marker, {})
    work = tmp_path / 'work'
    before = set()
    if way == 'auto_resume':
        args, path = _auto_resume(path, work)
        before = set(os.listdir(work))
    else:
        args = PATHS[way](path, work,
                          tiny_data / 'coco' / 'val' / 'val_00000.jpg')
    result = run_tool(args, timeout=300,
                      env={'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD': '1'})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines()
              if line.startswith('error:')]
    assert len(errors) == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert f'Refusing to load {path}' in errors[0] and NEEDS_CODE in \
        errors[0]
    assert not marker.exists()
    written = set(os.listdir(work)) - before if work.exists() else set()
    assert written <= {LOCK_FILE, 'failed.json'}, written
