"""Evaluate a checkpoint of an mmsa (or any mmdet/mmseg) config.

Flags mirror mmdet's ``tools/test.py``. The metrics are also written to
``WORK_DIR/test_metrics.json``.
"""
import argparse
import json
import os
import os.path as osp
import warnings
from copy import deepcopy

from mmengine.config import ConfigDict, DictAction

import mmsa  # noqa: F401  (registration; safe checkpoint loading)
from mmsa.engine import check_datasets, check_run_checkpoints, write_state
from mmsa.engine.cli import (build_runner, is_main_process, load_config,
                             run_cli, set_launcher, set_work_dir)
from mmsa.engine.hooks import to_scalar
from mmsa.engine.model_check import check_model
from mmsa.errors import ConfigError

# mmengine reloads pkg_resources for each mmdet::/mmseg:: base of a config,
# and setuptools warns of its deprecation on each load: a note for
# mmengine, repeated a dozen times above the user's own output.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated',
                        category=UserWarning)

STATE = {}


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out', type=str,
        help='detection: dump predictions to a pickle file; segmentation: '
        'directory for the predicted label maps')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved (relative to '
        'the run\'s timestamp dir, as in mmdet)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings, key=value')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation (flip)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg, args, scope):
    default_hooks = cfg.default_hooks
    if 'visualization' not in default_hooks:
        raise ConfigError(
            '--show/--show-dir need a visualization hook in default_hooks; '
            'inherit the framework\'s default_runtime.py')
    hook = default_hooks['visualization']
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        if scope == 'mmseg':
            cfg.visualizer['save_dir'] = args.show_dir
        else:
            hook['test_out_dir'] = args.show_dir
    return cfg


def default_tta(cfg, scope):
    """Flip TTA, as mmdet's/mmseg's test.py do when a config has none."""
    if scope == 'mmseg':
        cfg.tta_model = cfg.get('tta_model', dict(type='SegTTAModel'))
        pack = dict(type='PackSegInputs')
    else:
        cfg.tta_model = cfg.get('tta_model', dict(
            type='DetTTAModel',
            tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                         max_per_img=100)))
        pack = dict(type='PackDetInputs',
                    meta_keys=('img_id', 'img_path', 'ori_shape',
                               'img_shape', 'scale_factor', 'flip',
                               'flip_direction'))
    if 'tta_pipeline' not in cfg:
        data = cfg.test_dataloader.dataset
        while 'dataset' in data:
            data = data['dataset']
        pipeline = deepcopy(data.pipeline)
        pipeline[-1] = dict(type='TestTimeAug', transforms=[
            [dict(type='RandomFlip', prob=1.),
             dict(type='RandomFlip', prob=0.)], [pack]])
        cfg.tta_pipeline = pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    scope = cfg.get('default_scope', 'mmdet')
    set_launcher(cfg, args.launcher)
    set_work_dir(cfg, args.work_dir, args.config)
    STATE['work_dir'] = cfg.work_dir
    cfg.load_from = args.checkpoint
    if args.out is not None and scope != 'mmseg' and \
            not args.out.endswith(('.pkl', '.pickle')):
        raise ConfigError(f'--out {args.out}: the dump file must be a .pkl '
                          f'file')
    # the work dir first, so an error is recorded in failed.json
    os.makedirs(osp.abspath(cfg.work_dir), exist_ok=True)
    # config errors, a refused checkpoint and bad data before the runner
    model = check_model(cfg)
    check_run_checkpoints(cfg, model, testing=True)
    check_datasets(cfg, ['test_dataloader'])
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args, scope)
    if args.tta:
        default_tta(cfg, scope)
    if args.out is not None and scope == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    runner = build_runner(cfg)
    if args.out is not None and scope != 'mmseg':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(
            DumpDetResults(out_file_path=args.out))
    metrics = runner.test()
    if is_main_process():
        write_state(cfg.work_dir, 'test_metrics.json', dict(
            checkpoint=args.checkpoint,
            metrics={k: to_scalar(v) for k, v in metrics.items()}))
        print(json.dumps(metrics, default=str))


if __name__ == '__main__':
    run_cli(main, lambda: STATE.get('work_dir'))
