"""One run per work dir; a full disk ends a run with one clear line."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmsa.engine.cli import run_cli
from mmsa.engine.workdir import (LOCK_FILE, WorkDirBusyError, lock_work_dir,
                                 unlock_work_dir)

ROOT = Path(__file__).resolve().parents[2]
# workdir.py imports only mmsa.errors: with mmsa's package __init__s left
# out, a holder starts fast
HOLDER = f'''
import sys, time, types
for name in ('mmsa', 'mmsa.engine'):
    package = types.ModuleType(name)
    package.__path__ = [{str(ROOT)!r} + '/' + name.replace('.', '/')]
    sys.modules[name] = package
from mmsa.engine import workdir
workdir.lock_work_dir(sys.argv[1])
print('locked', flush=True)
time.sleep(120)
'''


def hold(work_dir: Path) -> subprocess.Popen:
    """Another run holding ``work_dir``, as ``tools/train.py`` would."""
    proc = subprocess.Popen([sys.executable, '-c', HOLDER, str(work_dir)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'locked'
    return proc


def test_busy_work_dir_is_refused_naming_the_other_run(tmp_path):
    holder = hold(tmp_path)
    try:
        with pytest.raises(WorkDirBusyError) as err:
            lock_work_dir(str(tmp_path))
        message = str(err.value)
        assert message.startswith(f'work dir {tmp_path} is in use by '
                                  f'another run (pid {holder.pid} on ')
        assert 'started 20' in message and '-c' in message
        assert 'give this run another --work-dir' in message
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_run_does_not_stay_stuck(tmp_path):
    holder = hold(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / LOCK_FILE).exists()
    lock_work_dir(str(tmp_path))
    holder_info = json.loads((tmp_path / LOCK_FILE).read_text())
    assert holder_info['pid'] == os.getpid()
    unlock_work_dir(str(tmp_path))


def test_train_into_busy_work_dir_stops_and_leaves_it_untouched(tmp_path):
    work = tmp_path / 'work'
    holder = hold(work)
    (work / 'finished.json').write_text('{"theirs": true}')
    try:
        result = subprocess.run(
            [sys.executable, 'tools/train.py',
             'configs/demo/faster-rcnn_r18-sa_fpn_demo.py', '--work-dir',
             str(work)], cwd=ROOT, capture_output=True, text=True,
            timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines()
              if line.startswith('error:')]
    assert len(errors) == 1 and errors[0].startswith(
        f'error: WorkDirBusyError: work dir {work} is in use by another run '
        f'(pid {holder.pid} on '), result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
    assert sorted(p.name for p in work.iterdir()) == [LOCK_FILE,
                                                      'finished.json']
    assert (work / 'finished.json').read_text() == '{"theirs": true}'


def test_disk_full_is_one_line_and_removes_the_partial_checkpoint(
        tmp_path, capsys):
    work = tmp_path / 'work'
    work.mkdir()
    complete = work / 'epoch_1.pth'
    torch.save({'state_dict': {'w': torch.randn(3)}}, complete)
    before = time.time() - 60
    os.utime(complete, (before, before))
    (work / 'last_checkpoint').write_text(str(complete))

    def main():
        # mmengine writes the whole checkpoint, then last_checkpoint
        with open(work / 'epoch_2.pth', 'wb') as f:
            f.write(complete.read_bytes()[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(SystemExit) as exit_:
        run_cli(main, lambda: str(work))
    assert exit_.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith('error:')]
    assert errors == [
        f'error: OSError: No space left on device while writing in {work}; '
        f'removed the incomplete {work}/epoch_2.pth; last_checkpoint names '
        f'{complete}, which is complete; free space (or raise the quota '
        f'or file size limit) and continue the run with --resume']
    assert not (work / 'epoch_2.pth').exists() and complete.exists()
    assert (work / 'last_checkpoint').read_text() == str(complete)
    failed = json.loads((work / 'failed.json').read_text())
    assert failed['error'] == 'OSError' and 'epoch_2.pth' in \
        failed['message']
