"""A small mmengine training run with mmsa's safeguards, for the tests of
stopping, resuming and saving (seconds, not minutes, per run).

It draws from every random generator a detector does: the sampler
shuffles, the dataset augments with numpy's and Python's generators, the
model drops out with torch's. A resumed run matches an uninterrupted one
only if all of them are restored.

Also a script: ``python toy_training.py WORK_DIR [--slow S]
[--stall-save N]`` trains in a subprocess (for signals and kills), and
under ``torchrun`` in several (``--signal-rank R --signal-at N`` signals
one rank only).
"""
import argparse
import os
import random
import time
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

from mmsa.engine.cli import guard_training


class ToyData(torch.utils.data.Dataset):
    """Twelve samples, augmented when read."""

    metainfo = dict(classes=('toy', ))

    def __init__(self, size: int = 12) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(size, 4, generator=gen)
        self.y = torch.randn(size, 1, generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        noise = np.random.randn(4).astype(np.float32) * 0.1
        scale = random.uniform(0.9, 1.1)
        return dict(inputs=(self.x[i] + torch.from_numpy(noise)) * scale,
                    targets=self.y[i])


class ToyModel(BaseModel):

    def __init__(self, slow: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(),
                                 nn.Dropout(0.2), nn.Linear(16, 1))
        self.slow = slow

    def forward(self, inputs, targets=None, mode='loss'):
        time.sleep(self.slow)
        out = self.net(inputs)
        if mode == 'loss':
            return dict(loss_fit=((out - targets)**2).mean(),
                        loss_reg=out.abs().mean() * 0.01)
        return [dict(error=float(((out - targets)**2).mean()))]


class ToyMetric(BaseMetric):

    def process(self, data_batch, data_samples) -> None:
        self.results.extend(data_samples)

    def compute_metrics(self, results) -> dict:
        error = float(np.mean([r['error'] for r in results]))
        return dict(error=error, rmse=error**0.5)


def train(work_dir: str,
          max_epochs: int = 2,
          resume: bool = False,
          hooks: Sequence[Hook] = (),
          val: bool = False,
          slow: float = 0.0,
          lr: float = 0.05,
          max_keep_ckpts: int = 1,
          by_epoch: bool = True,
          launcher: str = 'none',
          save_best: Union[None, str, List[str]] = None) -> Runner:
    """Train the toy model as ``tools/train.py`` sets a run up."""
    loader = dict(dataset=ToyData(),
                  batch_size=2,
                  num_workers=0,
                  collate_fn=dict(type='default_collate'),
                  sampler=dict(type='DefaultSampler' if by_epoch else
                               'InfiniteSampler', shuffle=True, seed=0))
    cfg = Config(dict(
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs,
                       val_interval=1) if by_epoch else dict(
                           by_epoch=False, max_iters=6 * max_epochs,
                           val_interval=6),
        default_hooks=dict(checkpoint=dict(
            type='CheckpointHook', interval=1 if by_epoch else 6,
            by_epoch=by_epoch, max_keep_ckpts=max_keep_ckpts,
            save_best=save_best, rule='less' if save_best else None)),
        custom_hooks=[]))
    guard_training(cfg)
    torch.manual_seed(0)  # the same initial weights in every run
    runner = Runner(
        model=ToyModel(slow),
        work_dir=work_dir,
        train_dataloader=loader,
        val_dataloader=dict(loader, sampler=dict(type='DefaultSampler',
                                                 shuffle=False))
        if val else None,
        val_evaluator=[ToyMetric()] if val else None,
        val_cfg=dict() if val else None,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=lr, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1]),
        train_cfg=cfg.train_cfg.to_dict(),
        default_hooks=cfg.default_hooks.to_dict(),
        custom_hooks=[*cfg.custom_hooks, *hooks],
        resume=resume,
        launcher=launcher,
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        # DDP of a CPU module takes no device_ids
        cfg=dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel',
                                        device_ids=None)),
        randomness=dict(seed=0),
        default_scope='mmengine',
        experiment_name=f'toy_{time.time_ns()}')
    runner.train()
    return runner


def weights(path: str) -> dict:
    return torch.load(path, map_location='cpu',
                      weights_only=False)['state_dict']


class SignalAt(Hook):
    """Sends ``signum`` to this process after a given iteration, or after
    a given validation batch."""

    priority = 'NORMAL'  # before TrainGuardHook looks

    def __init__(self, iteration: Optional[int] = None,
                 val_batch: Optional[int] = None,
                 signum: int = 15) -> None:
        self.iteration, self.val_batch = iteration, val_batch
        self.signum = signum

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if runner.iter + 1 == self.iteration:
            os.kill(os.getpid(), self.signum)

    def after_val_iter(self, runner, batch_idx, data_batch=None,
                       outputs=None) -> None:
        if batch_idx + 1 == self.val_batch:
            os.kill(os.getpid(), self.signum)


class BlowUpAt(Hook):
    """Scales the weights by 1e30 before a given iteration: its loss is
    not finite."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter + 1 == self.iteration:
            with torch.no_grad():
                for param in runner.model.parameters():
                    param.mul_(1e30)


class SayIterating(Hook):
    """Prints ``iterating`` once training iterates (for a parent process
    that signals it)."""

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter == 0:
            print('iterating', flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('work_dir')
    parser.add_argument('--slow', type=float, default=0.0)
    parser.add_argument(
        '--stall-save', type=int, default=0,
        help='the Nth atomic write (a checkpoint or last_checkpoint) '
        'stalls before its rename')
    parser.add_argument('--resume', action='store_true')
    parser.add_argument('--signal-rank', type=int, default=-1)
    parser.add_argument('--signal-at', type=int, default=0)
    args = parser.parse_args(argv)
    if args.stall_save:
        import mmsa.engine.checkpoints as checkpoints
        real_fsync, count = os.fsync, [0]

        def stalling_fsync(fd):
            count[0] += 1
            if count[0] == args.stall_save:
                print('stalled', flush=True)
                time.sleep(600)
            real_fsync(fd)


        checkpoints.os.fsync = stalling_fsync
    hooks = [SayIterating()]
    launcher = 'none'
    if 'RANK' in os.environ:  # torchrun
        import torch.distributed as dist
        dist.init_process_group('gloo')
        launcher = 'pytorch'
        if dist.get_rank() == args.signal_rank:
            hooks.append(SignalAt(args.signal_at))
    from mmsa.engine.cli import run_cli
    run_cli(lambda: train(args.work_dir, max_epochs=3, slow=args.slow,
                          hooks=hooks, resume=args.resume,
                          launcher=launcher),
            lambda: args.work_dir)


if __name__ == '__main__':
    main()
