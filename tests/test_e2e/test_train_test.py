"""tools/train.py and tools/test.py end to end, as subprocesses."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from e2e_utils import (DET_CONFIGS, ROOT, SEG_CONFIG, check, data_options,
                       read_json, run_tool)

SHORT_DET = ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
             'default_hooks.checkpoint.interval=1']
CONFIG = str(DET_CONFIGS['faster_rcnn'])


@pytest.mark.slow
@pytest.mark.parametrize('arch', sorted(DET_CONFIGS))
def test_demo_detector_trains_and_evaluates(arch, tiny_data, tmp_path):
    config = str(DET_CONFIGS[arch])
    work = tmp_path / arch
    # after 4 iterations RetinaNet scores nothing above its 0.05 threshold,
    # and COCO evaluation of no detections returns no metrics at all
    extra = ['model.test_cfg.score_thr=0.0'] if arch == 'retinanet' else []
    check(run_tool(['tools/train.py', config, '--work-dir', str(work),
                    '--cfg-options', *data_options(tiny_data), *SHORT_DET,
                    *extra]))
    state = read_json(work / 'finished.json')
    assert state['epoch'] == 1 and state['iter'] == 4  # 16 images / 4
    assert 0 <= state['metrics']['coco/bbox_mAP'] <= 1
    ckpt = state['checkpoint']
    check(run_tool(['tools/test.py', config, ckpt, '--work-dir',
                    str(tmp_path / 'test'), '--cfg-options',
                    *data_options(tiny_data), *extra]))
    metrics = read_json(tmp_path / 'test' / 'test_metrics.json')['metrics']
    keys = ['coco/bbox_mAP', 'coco/bbox_mAP_50']
    if arch == 'mask_rcnn':
        keys.append('coco/segm_mAP')
    for key in keys:
        assert 0 <= metrics[key] <= 1, (key, metrics)
    # the test run evaluates the same checkpoint the train run validated
    assert metrics['coco/bbox_mAP'] == state['metrics']['coco/bbox_mAP']


@pytest.mark.slow
def test_demo_segmentor_trains_and_evaluates(tiny_data, tmp_path):
    work = tmp_path / 'upernet'
    check(run_tool(['tools/train.py', str(SEG_CONFIG), '--work-dir',
                    str(work), '--cfg-options',
                    *data_options(tiny_data, seg=True),
                    'train_cfg.max_iters=6', 'train_cfg.val_interval=6',
                    'default_hooks.checkpoint.interval=6',
                    'param_scheduler.0.end=6']))
    state = read_json(work / 'finished.json')
    assert state['iter'] == 6 and 0 <= state['metrics']['mIoU'] <= 100
    check(run_tool(['tools/test.py', str(SEG_CONFIG), state['checkpoint'],
                    '--work-dir', str(tmp_path / 'test'), '--cfg-options',
                    *data_options(tiny_data, seg=True)]))
    metrics = read_json(tmp_path / 'test' / 'test_metrics.json')['metrics']
    assert metrics['mIoU'] == state['metrics']['mIoU']
    assert 0 <= metrics['aAcc'] <= 100


@pytest.mark.slow
def test_ddp_two_processes_match_single_process_eval(tiny_data, tmp_path):
    config = str(DET_CONFIGS['faster_rcnn'])
    work = tmp_path / 'ddp'
    torchrun = [sys.executable, '-m', 'torch.distributed.run',
                '--nproc_per_node=2', '--master_port=29533']
    result = subprocess.run(
        torchrun + ['tools/train.py', config, '--launcher', 'pytorch',
                    '--work-dir', str(work), '--cfg-options',
                    *data_options(tiny_data), *SHORT_DET],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, 'OMP_NUM_THREADS': '1'})
    check(result)
    state = read_json(work / 'finished.json')
    assert state['iter'] == 2  # 16 images / (2 processes x batch 4)
    ddp_map = state['metrics']['coco/bbox_mAP']
    check(run_tool(['tools/test.py', config, state['checkpoint'],
                    '--work-dir', str(tmp_path / 'single'),
                    '--cfg-options', *data_options(tiny_data)]))
    single = read_json(tmp_path / 'single' / 'test_metrics.json')['metrics']
    assert single['coco/bbox_mAP'] == ddp_map


def _weights(path):
    return torch.load(path, map_location='cpu', weights_only=True)[
        'state_dict']


@pytest.mark.slow
def test_resume_after_kill_gives_same_weights_and_metrics(tiny_data,
                                                          tmp_path):
    import mmsa  # noqa: F401  (allow-lists mmengine's checkpoint types)
    opts = ['--cfg-options', *data_options(tiny_data),
            'train_cfg.max_epochs=3', 'train_cfg.val_interval=3',
            'default_hooks.checkpoint.interval=1',
            'default_hooks.checkpoint.max_keep_ckpts=3',
            'param_scheduler.1.milestones=[2]']
    full, cut, proc = _run_and_start_again(
        tmp_path, opts, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    # a checkpoint appears only complete: written aside, then renamed
    while not (cut / 'epoch_2.pth').exists() and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / 'finished.json').exists()
    assert not (cut / 'epoch_3.pth').exists(), 'killed too late'
    check(run_tool(['tools/train.py', CONFIG, '--work-dir', str(cut),
                    '--resume', *opts]))
    _assert_same_run(full, cut, 'epoch_3.pth')


def _run_and_start_again(tmp_path, opts, **popen):
    """Train ``CONFIG`` with ``opts`` into ``full``; start the same run
    into ``cut`` as a process to interrupt."""
    full, cut = tmp_path / 'full', tmp_path / 'cut'
    check(run_tool(['tools/train.py', CONFIG, '--work-dir', str(full),
                    *opts]))
    proc = subprocess.Popen(
        [sys.executable, 'tools/train.py', CONFIG, '--work-dir', str(cut),
         *opts], cwd=ROOT, **popen)
    return full, cut, proc


def _assert_same_run(full, cut, checkpoint: str) -> None:
    """The runs in ``full`` and ``cut`` ended with the same weights and
    metrics."""
    a, b = _weights(full / checkpoint), _weights(cut / checkpoint)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert read_json(full / 'finished.json')['metrics'] == \
        read_json(cut / 'finished.json')['metrics']


@pytest.mark.slow
def test_checkpoint_the_disk_cannot_hold_is_one_line_and_removed(tiny_data,
                                                                 tmp_path):
    """A file size limit stands in for a full disk: the write fails the
    same way (EFBIG instead of ENOSPC) after a partial file is written."""
    import resource

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error, not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))

    work = tmp_path / 'work'
    result = subprocess.run(
        [sys.executable, 'tools/train.py', str(DET_CONFIGS['faster_rcnn']),
         '--work-dir', str(work), '--cfg-options', *data_options(tiny_data),
         *SHORT_DET], cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, 'OMP_NUM_THREADS': '2'},
        preexec_fn=limit_file_size)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines()
              if line.startswith('error:')]
    # the checkpoint was written aside: its partial file is already gone
    assert errors == [
        f'error: OSError: File too large while writing in {work}; no '
        f'checkpoint was complete yet; free space (or raise the quota or '
        f'file size limit) and continue the run with --resume'
    ], result.stderr[-3000:]
    assert not list(work.glob('*.pth*'))
    assert read_json(work / 'failed.json')['error'] == 'OSError'


@pytest.mark.parametrize('damage,expected', [
    ('missing_image', 'image file {root}/coco/val/val_00003.jpg'),
    ('bad_json', 'annotation file {root}/coco/annotations/'
     'instances_val.json is not COCO json'),
    ('not_coco', "is not COCO json: missing key(s) ['images', "
     "'annotations', 'categories']"),
    ('corrupt_image', 'image file {root}/coco/train/train_00002.jpg '
     '(images[2] of {root}/coco/annotations/instances_train.json) cannot '
     'be read'),
    ('negative_widths', 'mmdet would drop {n} with width or height < 1 px'),
])
def test_bad_data_ends_with_one_clear_error(damage, expected, tiny_data,
                                            tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(tiny_data, root)
    train_ann = root / 'coco' / 'annotations' / 'instances_train.json'
    n = 0
    if damage == 'missing_image':
        (root / 'coco' / 'val' / 'val_00003.jpg').unlink()
    elif damage == 'corrupt_image':
        (root / 'coco' / 'train' / 'train_00002.jpg').write_bytes(b'\0' * 64)
    elif damage == 'negative_widths':
        data = read_json(train_ann)
        for ann in data['annotations']:
            ann['bbox'][2] *= -1
        n = len(data['annotations'])
        train_ann.write_text(json.dumps(data))
    else:
        ann = root / 'coco' / 'annotations' / 'instances_val.json'
        ann.write_text('{"images": [' if damage == 'bad_json' else '[1, 2]')
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'finished.json').write_text('{"stale": true}')
    result = run_tool(['tools/train.py', str(DET_CONFIGS['faster_rcnn']),
                       '--work-dir', str(work), '--cfg-options',
                       *data_options(root)])
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines()
              if line.startswith('error:')]
    assert len(errors) == 1 and expected.format(root=root, n=n) in \
        errors[0], result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
    assert not (work / 'finished.json').exists()
    assert read_json(work / 'failed.json')['error'] == 'DatasetError'


def test_unknown_attention_in_config_names_key_and_choices(tiny_data,
                                                           tmp_path):
    result = run_tool([
        'tools/train.py', str(DET_CONFIGS['faster_rcnn']), '--work-dir',
        str(tmp_path / 'w'), '--cfg-options', *data_options(tiny_data),
        'model.backbone.attention.type=Shuffle'
    ])
    assert result.returncode == 1
    assert "Unknown attention type 'Shuffle'" in result.stderr
    assert 'Available: ' in result.stderr and 'SA' in result.stderr
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'w' / 'finished.json').exists()


def test_missing_checkpoint_for_test_is_one_clear_error(tmp_path):
    result = run_tool(['tools/test.py', str(DET_CONFIGS['faster_rcnn']),
                       str(tmp_path / 'nope.pth'), '--work-dir',
                       str(tmp_path)])
    assert result.returncode == 1
    assert f'checkpoint {tmp_path}/nope.pth does not exist' in result.stderr
    assert 'Traceback' not in result.stderr


def _errors(result) -> list:
    return [line for line in result.stderr.splitlines()
            if line.startswith('error:')]


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_gives_the_same_weights(tiny_data,
                                                              tmp_path):
    """16 images, batch 4: SIGTERM during epoch 1 of 2, then --resume."""
    opts = ['--cfg-options', *data_options(tiny_data),
            'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
            'default_hooks.checkpoint.interval=1',
            'default_hooks.logger.interval=1']
    full, cut, proc = _run_and_start_again(
        tmp_path, opts, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, 'OMP_NUM_THREADS': '2'})
    for line in proc.stdout:
        if 'Epoch(train) [1][1/4]' in line:
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    stopped = read_json(cut / 'interrupted.json')
    assert 1 <= stopped['iteration'] <= 3, stopped  # mid-epoch
    assert err.strip().splitlines()[-1] == (
        f'stopped: SIGTERM: training stopped after iteration '
        f'{stopped["iteration"]} (epoch 1, batch {stopped["iteration"]} of '
        f'4) and saved {stopped["checkpoint"]}, which last_checkpoint '
        f'names; continue with the same command plus --resume')
    assert not (cut / 'finished.json').exists()

    check(run_tool(['tools/train.py', CONFIG, '--work-dir', str(cut),
                    '--resume', *opts]))
    _assert_same_run(full, cut, 'epoch_2.pth')
    assert not (cut / 'interrupted.json').exists()


@pytest.mark.slow
def test_diverging_run_stops_at_the_first_non_finite_loss(tiny_data,
                                                          tmp_path):
    work = tmp_path / 'work'
    result = run_tool(['tools/train.py', str(DET_CONFIGS['faster_rcnn']),
                       '--work-dir', str(work), '--cfg-options',
                       *data_options(tiny_data), *SHORT_DET,
                       'optim_wrapper.optimizer.lr=1000',
                       'param_scheduler=None'])
    assert result.returncode == 1
    errors = _errors(result)
    assert len(errors) == 1 and errors[0].startswith(
        'error: NonFiniteLossError: the loss is not finite at iteration '), \
        result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    assert result.stdout.count('the loss jumped to') == 1
    failed = read_json(work / 'failed.json')
    assert failed['error'] == 'NonFiniteLossError'
    assert f'iteration {failed["iteration"]} ' in errors[0]
    assert 'loss' in failed['terms']
    assert not list(work.glob('*.pth')) and not (work /
                                                 'finished.json').exists()


@pytest.mark.slow
def test_image_that_fails_to_decode_in_a_worker_is_one_line(tiny_data,
                                                             tmp_path):
    """A file preflight did not decode (headers only) fails in a data
    worker during training: one line naming it, not a worker traceback."""
    root = tmp_path / 'data'
    shutil.copytree(tiny_data, root)
    broken = root / 'coco' / 'train' / 'train_00005.jpg'
    data = broken.read_bytes()
    broken.write_bytes(data[:len(data) // 2])
    work = tmp_path / 'work'
    result = run_tool(['tools/train.py', str(DET_CONFIGS['faster_rcnn']),
                       '--work-dir', str(work), '--cfg-options',
                       *data_options(root), *SHORT_DET,
                       'preflight.decode=header',
                       'train_dataloader.num_workers=1'], timeout=600)
    assert result.returncode == 1
    errors = _errors(result)
    assert len(errors) == 1 and errors[0].startswith(
        f'error: DataLoadError: {broken}: LoadImageFromFile failed while '
        f'training read it'), result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    assert read_json(work / 'failed.json')['error'] == 'DataLoadError'
