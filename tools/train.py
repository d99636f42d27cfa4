"""Train a detector or segmentor from an mmsa (or any mmdet/mmseg) config.

Flags mirror mmdet's ``tools/train.py``. The config's ``default_scope``
selects the framework.
"""
import argparse
import os
import os.path as osp
import warnings

from mmengine.config import DictAction

import mmsa  # noqa: F401  (registration; safe checkpoint loading)
from mmsa.engine import check_datasets, check_run_checkpoints, clear_run_state
from mmsa.engine.cli import (build_runner, guard_training, is_main_process,
                             load_config, run_cli, set_launcher, set_work_dir)
from mmsa.engine.model_check import check_model
from mmsa.engine.smoke import make_smoke
from mmsa.engine.stop import STOP
from mmsa.engine.swap import swap_attention
from mmsa.engine.workdir import lock_work_dir
from mmsa.errors import ConfigError, ConfigKeyError

# mmengine reloads pkg_resources for each mmdet::/mmseg:: base of a config,
# and setuptools warns of its deprecation on each load: a note for
# mmengine, repeated a dozen times above the user's own output.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated',
                        category=UserWarning)

STATE = {}


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp', action='store_true', default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the lr by the actual batch size (auto_scale_lr)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT; without CKPT, from the checkpoint the work '
        'dir\'s last_checkpoint names (also one a stopped run saved)')
    parser.add_argument(
        '--attention',
        help="replace the config's attention (backbone or neck, wherever it "
        "is) with this type at its paper defaults: ECA, \"dict(type='ECA', "
        "kernel_size=3)\", or None for the plain model")
    parser.add_argument(
        '--smoke', nargs='?', type=int, const=2, metavar='ITERS',
        help='check a setup: train ITERS iterations (default 2), then '
        'evaluate the first 8 validation images; the numbers mean nothing')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings, key=value (e.g. '
        'model.backbone.attention=ECA)')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    if args.attention is not None:
        swap_attention(cfg, args.attention)
    if args.smoke is not None:
        make_smoke(cfg, args.smoke)
        if args.work_dir is None and cfg.get('work_dir') is None:
            name = osp.splitext(osp.basename(args.config))[0]
            args.work_dir = osp.join('work_dirs', f'{name}_smoke')
    set_launcher(cfg, args.launcher)
    set_work_dir(cfg, args.work_dir, args.config)
    if is_main_process():
        # before anything is written there, so a refused run leaves the
        # other run's work dir untouched (not even failed.json)
        lock_work_dir(cfg.work_dir)
    STATE['work_dir'] = cfg.work_dir
    clear_run_state(cfg.work_dir)

    if args.amp:
        optim_wrapper = cfg.optim_wrapper.type
        if optim_wrapper == 'AmpOptimWrapper':
            print('AMP training is already enabled in your config.')
        else:
            if optim_wrapper != 'OptimWrapper':
                raise ConfigError(
                    f'--amp needs optim_wrapper.type=\'OptimWrapper\' (it '
                    f'becomes AmpOptimWrapper), but the config has '
                    f'{optim_wrapper!r}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and 'enable' in cfg.auto_scale_lr and \
                'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise ConfigKeyError(
                '--auto-scale-lr needs auto_scale_lr=dict(enable=False, '
                'base_batch_size=N) in the config (N: the batch size its '
                'learning rate is for)')

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    # Config errors, then refused checkpoint files and bad data, all before
    # the runner writes anything
    model = check_model(cfg)
    check_run_checkpoints(cfg, model)
    check_datasets(cfg, ['train_dataloader', 'val_dataloader'])
    guard_training(cfg)
    os.makedirs(osp.abspath(cfg.work_dir), exist_ok=True)
    # From here a stop signal ends training safely (TrainGuardHook)
    STOP.install()
    runner = build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    run_cli(main, lambda: STATE.get('work_dir'))
