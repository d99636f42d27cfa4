"""Mark a work dir finished only when its run completed."""
import json
import os
import os.path as osp
import time
from typing import Dict, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

FINISHED = 'finished.json'
FAILED = 'failed.json'
INTERRUPTED = 'interrupted.json'


def to_scalar(value):
    """A metric as a JSON number (numpy floats included), else a string."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def clear_run_state(work_dir: str) -> None:
    """Forget a previous run's verdict before this run can fail.

    Safe to call from every rank: a marker another rank removed first is
    simply gone.
    """
    for name in (FINISHED, FAILED, INTERRUPTED):
        try:
            os.remove(osp.join(work_dir, name))
        except FileNotFoundError:
            pass


def write_state(work_dir: str, name: str, payload: Dict) -> str:
    path = osp.join(work_dir, name)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)  # atomic: never a half-written marker
    return path


@HOOKS.register_module()
class RunStateHook(Hook):
    """Write ``finished.json`` (last metrics, checkpoint) when training ends.

    A stale marker is removed when a run starts, so a work dir from a run
    that crashed or was killed never looks finished. ``tools/train.py``
    adds this hook; it writes ``failed.json`` itself when a run fails, and
    ``interrupted.json`` when a signal stopped it.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.last_metrics: Optional[Dict] = None
        self.start = time.time()

    def before_run(self, runner) -> None:
        if is_main_process():
            clear_run_state(runner.work_dir)

    def after_val_epoch(self, runner, metrics=None) -> None:
        # {} when the evaluator had nothing to score (e.g. no detections)
        if metrics is not None:
            self.last_metrics = {k: to_scalar(v) for k, v in metrics.items()}

    def after_train(self, runner) -> None:
        if not is_main_process():
            return
        ckpt = osp.join(runner.work_dir, 'last_checkpoint')
        last = open(ckpt).read().strip() if osp.exists(ckpt) else None
        write_state(runner.work_dir, FINISHED, dict(
            epoch=runner.epoch, iter=runner.iter,
            metrics=self.last_metrics, checkpoint=last,
            seconds=round(time.time() - self.start, 1)))


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Reseed python, numpy and torch at each epoch from (seed, epoch).

    mmengine seeds once at start, so after ``--resume`` the augmentation and
    sampling RNGs differ from those of an uninterrupted run. Reseeding per
    epoch makes a resumed run draw exactly what the uninterrupted one drew,
    so both end with identical weights (epoch-based loops).

    Args:
        seed (int): Base seed. Defaults to 0.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def before_train_epoch(self, runner) -> None:
        import random

        import numpy as np
        import torch
        from mmengine.dist import get_rank
        seed = (self.seed + 1000003 * runner.epoch + 7919 * get_rank()) \
            % 2**31
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
