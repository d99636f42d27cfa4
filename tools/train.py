"""Train a detector or segmentor from an mmsa (or any mmdet/mmseg) config.

Flags mirror mmdet's ``tools/train.py``. The config's ``default_scope``
selects the framework.
"""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction

import mmsa  # noqa: F401  (registration; safe checkpoint loading)
from mmsa.engine import check_datasets, clear_run_state
from mmsa.engine.cli import (build_runner, is_main_process, load_config,
                             run_cli, set_launcher, set_work_dir)
from mmsa.engine.workdir import lock_work_dir

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
        help='resume from CKPT; without CKPT, from the latest checkpoint '
        'in the work dir')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings, key=value (e.g. '
        'model.backbone.attention.type=ECA)')
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
            assert optim_wrapper == 'OptimWrapper', (
                '`--amp` is only supported when the optimizer wrapper type '
                f'is `OptimWrapper` but got {optim_wrapper}.')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and 'enable' in cfg.auto_scale_lr and \
                'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise KeyError('Can not find "auto_scale_lr" or '
                           '"auto_scale_lr.enable" or '
                           '"auto_scale_lr.base_batch_size" in your'
                           ' configuration file.')

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(
                f'--resume checkpoint {args.resume} does not exist')
        cfg.resume = True
        cfg.load_from = args.resume

    check_datasets(cfg, ['train_dataloader', 'val_dataloader'])
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
        dict(type='RunStateHook')
    ]
    os.makedirs(osp.abspath(cfg.work_dir), exist_ok=True)
    runner = build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    run_cli(main, lambda: STATE.get('work_dir'))
