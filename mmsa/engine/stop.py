"""Stop training safely: on a non-finite loss, and on a stop signal.

:class:`TrainGuardHook` decides at each iteration boundary whether the run
goes on, for detection and segmentation alike:

- **Non-finite loss.** mmengine's ``RuntimeInfoHook`` already brings every
  loss term of the iteration to the host (``message_hub``'s ``train/*``
  scalars, read by the logger); the hook reads them there, so it adds no
  device synchronisation. At the first NaN or infinite term the run ends
  with :class:`~mmsa.errors.NonFiniteLossError` naming the iteration and
  the terms, before any checkpoint of that iteration is written: the last
  checkpoint stays the last good one. A finite loss that jumps by more than
  :data:`JUMP_FACTOR` over the median of the iterations before is reported
  once, as a warning.
- **Signals.** ``SIGTERM``, ``SIGINT`` (Ctrl-C) and ``SIGUSR1`` (slurm's
  ``--signal``, sent ahead of a time limit) ask the run to stop
  (:class:`StopRequest`): the current iteration, or validation batch,
  finishes, a checkpoint ``--resume`` continues from is saved, and the run
  ends with :class:`~mmsa.errors.TrainingInterrupted` (the tools exit with
  ``128 + signal``). A second signal ends the process at once. Data-loader
  workers ignore the signals (:func:`ignore_stop_signals`): the main
  process decides.

In a distributed run the ranks agree at each boundary: one all-reduce of
two integers (the signal, a non-finite flag) over a CPU (gloo) group, as
NeMo's preemption callback does, so every rank saves and leaves together
and none is left waiting in a collective.
"""
import logging
import math
import os
import os.path as osp
import random
import signal
import threading
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from mmengine.dist import is_distributed, is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

from ..errors import MMSAError, NonFiniteLossError, TrainingInterrupted
from .checkpoints import LAST_CHECKPOINT, save_resume_point
from .hooks import write_state

# A total loss this many times the median of the recent ones is reported.
JUMP_FACTOR = 100
JUMP_WINDOW = 50  # iterations the median is taken over
JUMP_MIN_HISTORY = 1
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ('SIGTERM', 'SIGINT', 'SIGUSR1')
    if hasattr(signal, name))
RESUME_META = 'mmsa_resume'


class StopRequest:
    """Turns the first stop signal into a request, the second into a kill.

    :meth:`install` sets the handlers in the process that runs training.
    The first signal only records itself (:attr:`signum`); the handlers are
    then reset to the system default, so a second signal ends the process
    at once, even inside a long operation. A data-loader worker forked from
    the main process inherits the handler and ignores the signal.
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._owner: Optional[int] = None
        self._previous: Dict[int, object] = {}

    def install(self) -> None:
        """Handle the stop signals in this process. Idempotent: a signal
        received since the first call stays recorded."""
        if self._owner == os.getpid():
            return
        self._owner = os.getpid()
        self.signum = None
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        """Restore the handlers :meth:`install` replaced and forget the
        request (the run acted on it, or ended)."""
        if self._owner != os.getpid():
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._owner = None
        self._previous = {}
        self.signum = None

    def _handle(self, signum: int, frame) -> None:
        if os.getpid() != self._owner:
            return  # a forked data-loader worker
        self.signum = signum
        for other in STOP_SIGNALS:
            signal.signal(other, signal.SIG_DFL)
        name = signal.Signals(signum).name
        os.write(2, (f'\n{name} received: training stops after the current '
                     f'iteration and saves a checkpoint to resume from; a '
                     f'second signal stops it at once\n').encode())


STOP = StopRequest()


def ignore_stop_signals(init_fn: Optional[Callable[[int], None]],
                        worker_id: int) -> None:
    """``worker_init_fn`` of a data loader whose workers leave stopping to
    the main process; then runs the loader's own ``init_fn``.

    A stop signal from anyone but the worker's parent (the terminal's
    Ctrl-C, a scheduler signalling every process of a job) is ignored. The
    parent's own ``SIGTERM`` still ends the worker: it is how torch and
    multiprocessing end a worker that did not stop when asked. A thread
    waits for the signals (blocked everywhere else) to see who sent them;
    where that cannot be known (no ``sigwaitinfo``), the worker ignores
    all of them.
    """
    if hasattr(signal, 'sigwaitinfo'):
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        threading.Thread(target=_obey_parent_only, args=(os.getppid(), ),
                         name='mmsa-stop-signals', daemon=True).start()
    else:  # pragma: no cover - macOS, Windows
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
    if init_fn is not None:
        init_fn(worker_id)


def _obey_parent_only(parent: int) -> None:
    while True:
        info = signal.sigwaitinfo(STOP_SIGNALS)
        if info.si_pid == parent:
            os._exit(128 + info.si_signo)


def rng_state() -> Dict:
    """The states of the random generators training draws from."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@HOOKS.register_module()
class TrainGuardHook(Hook):
    """Stop training on a non-finite loss or a stop signal (see the module
    docstring); continue an interrupted run where it stopped.

    ``tools/train.py`` adds it, with the loops of :mod:`mmsa.engine.loops`
    (which resume mid-epoch) and :class:`AtomicCheckpointHook`.

    Args:
        jump_factor (float): Report once when the total loss exceeds this
            multiple of the median of the previous iterations. Defaults to
            :data:`JUMP_FACTOR`.
    """

    # After ParamSchedulerHook (LOW, 70): a saved scheduler has stepped
    # like the optimizer. Before CheckpointHook and RunStateHook
    # (VERY_LOW, 90): nothing of a bad iteration is saved.
    priority = 80

    def __init__(self, jump_factor: float = JUMP_FACTOR) -> None:
        self.jump_factor = jump_factor
        self._jump_reported = False
        self._distributed = False
        self._group = None
        self._val_lockstep = True
        self._rng_before_val: Optional[Dict] = None
        self._loaded: Optional[Dict] = None

    # the agreement between ranks

    def _agree(self, values: Sequence[int]) -> List[int]:
        """``values`` maximised over the ranks."""
        if not self._distributed:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.int64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self._group)
        return tensor.tolist()

    def _gather(self, obj) -> list:
        if not self._distributed:
            return [obj]
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, obj, group=self._group)
        return gathered

    # resuming

    def after_load_checkpoint(self, runner, checkpoint: Dict) -> None:
        meta = checkpoint.get('meta') or {}
        self._loaded = dict(meta, resume=meta.get(RESUME_META))

    def _resume_point(self, runner) -> Optional[Dict]:
        """The interrupted run's state, when this run resumed it (not when
        it only loaded its weights: ``load_from``)."""
        loaded, self._loaded = self._loaded, None
        loop = runner.train_loop
        if not loaded or not loaded['resume'] or (
                loaded.get('epoch'), loaded.get('iter')) != (loop.epoch,
                                                             loop.iter):
            return None
        point = dict(loaded['resume'])
        rngs = point.pop('rng', None) or []
        rank = dist.get_rank() if self._distributed else 0
        point['rng'] = rngs[rank] if len(rngs) == (
            dist.get_world_size() if self._distributed else 1) else None
        return point

    def before_train(self, runner) -> None:
        from .loops import guard_dataloader
        STOP.install()
        self._distributed = is_distributed()
        if self._distributed and dist.get_backend() != 'gloo':
            self._group = dist.new_group(backend='gloo')
        loop = runner.train_loop
        if hasattr(loop, 'resume_point'):
            loop.resume_point = self._resume_point(runner)
        else:
            guard_dataloader(loop.dataloader)
            runner.logger.warning(
                f'train_cfg.type={type(loop).__name__} is not one of mmsa\'s '
                f'loops: a run stopped mid-epoch will resume at the start '
                f'of that epoch')
        if runner.val_loop is not None:
            guard_dataloader(runner.val_loop.dataloader)
        signum, = self._agree([STOP.signum or 0])
        if signum:
            name = signal.Signals(signum).name
            self._leave(runner, TrainingInterrupted(
                f'{name} received before training started: nothing was '
                f'trained or saved; run the same command again to start',
                signum))

    # every iteration

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[Dict] = None) -> None:
        bad = self._nonfinite_terms(runner, outputs)
        signum, any_bad = self._agree([STOP.signum or 0, int(bool(bad))])
        if any_bad:
            self._stop_nonfinite(runner, batch_idx, bad)
        if signum:
            self._stop_for_signal(runner, signum, batches_done=batch_idx + 1)
        self._report_jump(runner)

    def before_val(self, runner) -> None:
        # A validation a signal interrupts runs again on resume: from the
        # generators' state before it, as it ran in the first place.
        self._rng_before_val = rng_state()
        # Signals are agreed on per validation batch only where every rank
        # runs the same number of them (else a rank would wait alone).
        if self._distributed:
            n = len(runner.val_loop.dataloader)
            high, low = self._agree([n, -n])
            self._val_lockstep = high == -low

    def after_val_iter(self, runner, batch_idx: int, data_batch=None,
                       outputs=None) -> None:
        if runner.train_loop is None or not self._val_lockstep:
            return
        signum, = self._agree([STOP.signum or 0])
        if signum:
            self._stop_for_signal(runner, signum, batches_done=0)

    def after_train(self, runner) -> None:
        if STOP.signum:
            runner.logger.info(
                f'{signal.Signals(STOP.signum).name} came after the last '
                f'iteration: training completed')

    def after_run(self, runner) -> None:
        STOP.uninstall()

    # non-finite and exploding losses

    @staticmethod
    def _nonfinite_terms(runner, outputs: Optional[Dict]) -> Dict[str, float]:
        if not outputs:
            return {}
        bad = {}
        for key in outputs:
            if 'loss' not in key:
                continue
            buffer = runner.message_hub.log_scalars.get(f'train/{key}')
            value = buffer.current() if buffer is not None else None
            if isinstance(value, (int, float)) and not math.isfinite(value):
                bad[key] = value
        return bad

    def _stop_nonfinite(self, runner, batch_idx: int,
                        bad: Dict[str, float]) -> None:
        by_rank = self._gather(bad)
        terms = {}
        for rank, found in enumerate(by_rank):
            for key, value in found.items():
                terms.setdefault(key, value)
        shown = ', '.join(f'{k}={v}' for k, v in terms.items())
        if len(by_rank) > 1:
            ranks = [str(r) for r, found in enumerate(by_rank) if found]
            shown += f' (on rank {", ".join(ranks)})'
        last = self._last_checkpoint(runner)
        kept = (f'the last checkpoint, {last}, is from before it'
                if last else 'no checkpoint had been written')
        lr = next(iter(runner.optim_wrapper.get_lr().values()))[0]
        iteration = runner.iter + 1
        self._leave(runner, NonFiniteLossError(
            f'the loss is not finite at iteration {iteration} '
            f'({self._where(runner, batch_idx + 1)}): {shown}; training '
            f'stopped and saved nothing of this iteration: {kept}. Lower '
            f'the learning rate (optim_wrapper.optimizer.lr, now '
            f'{lr:g}) or clip gradients (optim_wrapper.clip_grad='
            f'dict(max_norm=10)) and train again',
            iteration=iteration, terms={k: str(v) for k, v in terms.items()},
            checkpoint=last))

    def _leave(self, runner, err: MMSAError) -> None:
        """End the run with ``err`` on every rank, its record written.

        The main process records it in the work dir (as ``tools/*.py``
        would after) and logs it before any rank leaves: under torchrun the
        first rank to exit makes the launcher end the others.
        """
        if is_main_process():
            write_state(runner.work_dir, err.state_file,
                        dict(error=type(err).__name__, message=str(err),
                             **err.details))
            runner.logger.log(logging.WARNING if isinstance(
                err, TrainingInterrupted) else logging.ERROR, str(err))
        self._agree([0])
        STOP.uninstall()
        raise err

    def _report_jump(self, runner) -> None:
        if self._jump_reported:
            return
        buffer = runner.message_hub.log_scalars.get('train/loss')
        if buffer is None:
            return
        history = buffer.data[0]
        before = np.abs(history[-JUMP_WINDOW - 1:-1])
        if len(before) < JUMP_MIN_HISTORY:
            return
        reference, now = float(np.median(before)), float(history[-1])
        if reference > 0 and now > self.jump_factor * reference:
            self._jump_reported = True
            runner.logger.warning(
                f'iteration {runner.iter + 1}: the loss jumped to {now:.3g}, '
                f'{now / reference:.2g} times the median {reference:.3g} of '
                f'the {len(before)} iterations before; training is '
                f'probably diverging: lower the learning rate '
                f'(optim_wrapper.optimizer.lr) or clip gradients '
                f'(reported once)')

    # stopping on a signal

    @staticmethod
    def _last_checkpoint(runner) -> Optional[str]:
        pointer = osp.join(runner.work_dir, LAST_CHECKPOINT)
        if not osp.isfile(pointer):
            return None
        with open(pointer) as f:
            return f.read().strip() or None

    @staticmethod
    def _where(runner, batches_done: int) -> str:
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop):
            return f'of {loop.max_iters}'
        return (f'epoch {loop.epoch + 1}, batch {batches_done} of '
                f'{len(loop.dataloader)}')

    def _stop_for_signal(self, runner, signum: int,
                         batches_done: int) -> None:
        """Save where the run is (``batches_done`` of the current epoch;
        0: between epochs, during validation), agree, and stop."""
        in_validation = batches_done == 0
        done = runner.iter + (0 if in_validation else 1)
        loop = runner.train_loop
        meta = dict(epoch=loop.epoch, iter=done)
        rng = self._rng_before_val if in_validation else rng_state()
        meta[RESUME_META] = dict(batches_done=batches_done,
                                 val_pending=in_validation,
                                 rng=self._gather(rng))
        path = save_resume_point(runner, meta)
        name = signal.Signals(signum).name
        where = 'during the validation after it' if in_validation else \
            self._where(runner, batches_done)
        self._leave(runner, TrainingInterrupted(
            f'{name}: training stopped after iteration {done} ({where}) '
            f'and saved {path}, which {LAST_CHECKPOINT} names; continue '
            f'with the same command plus --resume', signum,
            checkpoint=path, iteration=done))
