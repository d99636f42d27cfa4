"""Training stops safely (a non-finite loss, a stop signal, a kill during a
save) and an interrupted run resumes where it stopped, bit for bit."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.runner import Runner
from toy_training import BlowUpAt, SignalAt, train, weights

from mmsa.engine.checkpoints import atomic_write
from mmsa.engine.stop import STOP
from mmsa.errors import NonFiniteLossError, TrainingInterrupted
from mmsa.utils import safe_load

TOY = Path(__file__).resolve().parents[1] / 'toy_training.py'


@pytest.fixture(autouse=True)
def no_stop_request_left():
    yield
    STOP.uninstall()


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp('uninterrupted')
    train(str(work))
    return weights(str(work / 'epoch_2.pth'))


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize('stop_after', [2, 4, 6, 9])
def test_sigterm_mid_epoch_then_resume_gives_the_same_weights(
        tmp_path, uninterrupted, stop_after):
    """Six batches an epoch: stops in epoch 1, at its end, and in epoch 2."""
    with pytest.raises(TrainingInterrupted) as err:
        train(str(tmp_path), hooks=[SignalAt(stop_after)])
    assert err.value.exit_code == 128 + signal.SIGTERM
    saved = tmp_path / f'iter_{stop_after}.pth'
    assert err.value.details == dict(signal=15, checkpoint=str(saved),
                                     iteration=stop_after)
    assert str(err.value).startswith(f'SIGTERM: training stopped after '
                                     f'iteration {stop_after} (epoch ')
    assert (tmp_path / 'last_checkpoint').read_text() == str(saved)
    meta = safe_load(saved)['meta']
    # the epoch in progress, and the batches of it that are done
    assert (meta['epoch'], meta['iter']) == ((stop_after - 1) // 6,
                                             stop_after)
    assert meta['mmsa_resume']['batches_done'] == (stop_after - 1) % 6 + 1
    assert not (tmp_path / 'epoch_2.pth').exists()

    runner = train(str(tmp_path), resume=True)
    assert runner.iter == 12
    _assert_same(weights(str(tmp_path / 'epoch_2.pth')), uninterrupted)
    # the regular checkpoint that followed replaced the interrupted one
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['epoch_2.pth']


def test_signal_during_validation_is_honoured_and_the_validation_rerun(
        tmp_path):
    full = tmp_path / 'full'
    train(str(full), val=True)
    cut = tmp_path / 'cut'
    with pytest.raises(TrainingInterrupted, match=(
            r'^SIGINT: training stopped after iteration 6 \(during the '
            r'validation after it\)')):
        train(str(cut), val=True,
              hooks=[SignalAt(val_batch=2, signum=signal.SIGINT)])
    assert safe_load(cut / 'iter_6.pth')['meta']['mmsa_resume'][
        'val_pending']
    runner = train(str(cut), val=True, resume=True)
    _assert_same(weights(str(cut / 'epoch_2.pth')),
                 weights(str(full / 'epoch_2.pth')))
    # both validations of the interrupted run's epoch 1 and of epoch 2 ran
    scalars = runner.message_hub.log_scalars['val/error']
    assert len(scalars.data[0]) == 2


def test_iteration_based_run_resumes_at_the_interrupted_iteration(
        tmp_path):
    full = tmp_path / 'full'
    train(str(full), by_epoch=False)
    cut = tmp_path / 'cut'
    with pytest.raises(TrainingInterrupted, match=r'iteration 8 \(of 12\)'):
        train(str(cut), by_epoch=False, hooks=[SignalAt(8)])
    train(str(cut), by_epoch=False, resume=True)
    _assert_same(weights(str(cut / 'iter_12.pth')),
                 weights(str(full / 'iter_12.pth')))


def test_non_finite_loss_stops_naming_iteration_and_terms(tmp_path):
    with pytest.raises(NonFiniteLossError) as err:
        train(str(tmp_path), hooks=[BlowUpAt(8)])
    last = tmp_path / 'epoch_1.pth'
    assert str(err.value).startswith(
        'the loss is not finite at iteration 8 (epoch 2, batch 2 of 6): '
        'loss=')
    assert 'loss_fit=' in str(err.value)
    assert (f'training stopped and saved nothing of this iteration: the '
            f'last checkpoint, {last}, is from before it. Lower the '
            f'learning rate (optim_wrapper.optimizer.lr, now 0.005)') in \
        str(err.value)
    assert err.value.details['iteration'] == 8
    assert set(err.value.details['terms']) == {'loss', 'loss_fit',
                                               'loss_reg'}
    # the last good checkpoint is kept, nothing of iteration 8 is saved
    assert [p.name for p in tmp_path.glob('*.pth')] == ['epoch_1.pth']
    assert (tmp_path / 'last_checkpoint').read_text() == str(last)
    assert all(torch.isfinite(w).all() for w in weights(str(last)).values())


def _jump_reports(losses) -> list:
    """What the hook reports over ``losses``, as mmengine logs them."""
    from types import SimpleNamespace

    from mmengine.logging import MessageHub

    from mmsa.engine.stop import TrainGuardHook
    hub = MessageHub(f'jump_{len(losses)}_{losses[-1]}')
    reports = []
    runner = SimpleNamespace(
        message_hub=hub, iter=0,
        logger=SimpleNamespace(warning=reports.append))
    hook = TrainGuardHook()
    for i, loss in enumerate(losses):
        runner.iter = i
        hub.update_scalar('train/loss', loss)
        hook._report_jump(runner)
    return reports


def test_a_loss_that_jumps_by_orders_of_magnitude_is_reported_once():
    reports = _jump_reports([2.2, 2.1, 6e17, 7e17, 1e3, 8e20])
    assert reports == [
        'iteration 3: the loss jumped to 6e+17, 2.8e+17 times the median '
        '2.15 of the 2 iterations before; training is probably diverging: '
        'lower the learning rate (optim_wrapper.optimizer.lr) or clip '
        'gradients (reported once)']
    # falling, noisy or slowly rising losses are no jump
    assert _jump_reports([2.2, 0.01, 3.0, 1.5, 40.0, 0.7]) == []


def test_an_interrupted_write_never_replaces_the_file(tmp_path,
                                                      monkeypatch):
    path = tmp_path / 'epoch_1.pth'
    atomic_write(path, b'complete')

    def cut(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, 'fsync', cut)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, b'the next one, half writ')
    assert path.read_bytes() == b'complete'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth']


def _spawn(work: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(TOY), str(work), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, 'PYTHONPATH': os.pathsep.join(
            [str(TOY.parents[1]), str(TOY.parent),
             os.environ.get('PYTHONPATH', '')])})


def _wait_for(stream, text: str) -> None:
    """Read ``stream`` until a line holds ``text`` (the run's logs pass)."""
    seen = []
    for line in stream:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f'{text!r} never came:\n' + ''.join(seen[-30:]))


def test_kill_during_a_save_leaves_the_previous_checkpoint_to_resume(
        tmp_path):
    """With max_keep_ckpts=1 mmengine deletes epoch_1 before it writes
    epoch_2: a kill then leaves nothing. Here epoch_1 stays until epoch_2
    is complete."""
    work = tmp_path / 'work'
    proc = _spawn(work, '--stall-save', '3')  # epoch_2.pth's write
    try:
        _wait_for(proc.stdout, 'stalled')
    finally:
        proc.kill()
        proc.wait()
    assert sorted(p.name for p in work.glob('*.pth*')) == [
        'epoch_1.pth', 'epoch_2.pth.part']
    assert (work / 'last_checkpoint').read_text() == str(
        work / 'epoch_1.pth')
    assert safe_load(work / 'epoch_1.pth')['meta']['epoch'] == 1
    runner = train(str(work), max_epochs=3, resume=True)
    assert runner.iter == 18
    assert sorted(p.name for p in work.glob('*.pth*')) == ['epoch_3.pth']


@pytest.mark.parametrize('save_best', ['error', ['error', 'rmse']])
def test_a_failed_best_save_keeps_the_previous_best(tmp_path, monkeypatch,
                                                    save_best):
    """mmengine deletes the previous best checkpoint before it writes the
    new one: a kill in between leaves no best. Here it stays until the new
    one is complete (with one key indicator or several)."""
    keys = [save_best] if isinstance(save_best, str) else save_best
    work = tmp_path / 'work'
    save = Runner.save_checkpoint

    def fail_on_epoch_2s_best(self, out_dir, filename, *args, **kwargs):
        if filename.startswith('best_') and filename.endswith('epoch_2.pth'):
            raise KeyboardInterrupt('killed while saving the best')
        return save(self, out_dir, filename, *args, **kwargs)

    monkeypatch.setattr(Runner, 'save_checkpoint', fail_on_epoch_2s_best)
    with pytest.raises(KeyboardInterrupt):
        train(str(work), max_epochs=3, val=True, save_best=save_best)
    for key in keys:
        first = work / f'best_{key}_epoch_1.pth'
        assert first.is_file(), key
        assert safe_load(first)['meta']['epoch'] == 1

    monkeypatch.setattr(Runner, 'save_checkpoint', save)
    whole = tmp_path / 'whole'
    train(str(whole), max_epochs=3, val=True, save_best=save_best)
    # each new best replaced the one before: one file per key
    assert sorted(p.name for p in whole.glob('best_*')) == sorted(
        f'best_{key}_epoch_3.pth' for key in keys)


def test_second_signal_stops_at_once(tmp_path):
    work = tmp_path / 'work'
    proc = _spawn(work, '--slow', '2')  # each iteration takes 2 s
    try:
        _wait_for(proc.stdout, 'iterating')
        proc.send_signal(signal.SIGTERM)
        _wait_for(proc.stderr, 'SIGTERM received: training stops after the '
                  'current iteration')
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
    assert not list(work.glob('*.pth'))
    assert not (work / 'interrupted.json').exists()


def test_run_state_of_an_interrupted_run(tmp_path, capsys):
    from mmsa.engine.cli import run_cli

    def main():
        train(str(tmp_path), hooks=[SignalAt(3)])

    with pytest.raises(SystemExit) as exit_:
        run_cli(main, lambda: str(tmp_path))
    assert exit_.value.code == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('stopped: SIGTERM: training stopped after '
                              'iteration 3')
    assert 'continue with the same command plus --resume' in err[-1]
    state = json.loads((tmp_path / 'interrupted.json').read_text())
    assert state['checkpoint'] == str(tmp_path / 'iter_3.pth')
    assert not (tmp_path / 'failed.json').exists()


def _torchrun(work: Path, *args: str) -> subprocess.CompletedProcess:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         f'--master_port={port}', str(TOY), str(work), *args],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep
             .join([str(TOY.parents[1]), str(TOY.parent),
                    os.environ.get('PYTHONPATH', '')])})


@pytest.mark.slow
def test_ranks_agree_on_a_signal_only_one_of_them_got(tmp_path):
    """Two processes, SIGTERM to rank 1 alone after iteration 2: both stop
    there (none waits in a collective), rank 0 saves, and the resumed run
    ends with the weights of an uninterrupted one."""
    full = tmp_path / 'full'
    result = _torchrun(full)
    assert result.returncode == 0, result.stderr[-3000:]
    cut = tmp_path / 'cut'
    result = _torchrun(cut, '--signal-rank', '1', '--signal-at', '2')
    assert result.returncode != 0
    # logged and recorded before any rank left (torchrun ends the others
    # when the first one exits)
    assert 'SIGTERM: training stopped after iteration 2 (epoch 1, batch 2 ' \
        'of 3)' in result.stdout, result.stderr[-3000:]
    assert json.loads((cut / 'interrupted.json').read_text())[
        'iteration'] == 2
    resume = safe_load(cut / 'iter_2.pth')['meta']['mmsa_resume']
    assert len(resume['rng']) == 2  # each rank's generators
    result = _torchrun(cut, '--resume')
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same(weights(str(cut / 'epoch_3.pth')),
                 weights(str(full / 'epoch_3.pth')))
