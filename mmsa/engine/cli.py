"""What ``tools/*.py`` share.

One pair of tools serves detection and segmentation configs: the config's
``default_scope`` (``mmdet``/``mmseg``) picks the framework, as in
mmdet's/mmseg's own tools.
"""
import os
import os.path as osp
import sys
import time
import traceback
from typing import Callable, Optional

import torch
from mmengine.config import Config
from mmengine.hooks import CheckpointHook

from ..errors import DEBUG_HINT, ConfigError, MMSAError, debugging
from .hooks import FAILED, write_state
from .loops import LOOP_TYPES
from .workdir import DISK_FULL, disk_full_message


def load_config(path: str, cfg_options: Optional[dict]) -> Config:
    if not osp.isfile(path):
        raise ConfigError(f'config file {path} does not exist; check the '
                          f'path')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def set_work_dir(cfg: Config, work_dir: Optional[str], config: str) -> None:
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])


def set_launcher(cfg: Config, launcher: str) -> None:
    """Make DDP work on CPU: gloo instead of the frameworks' nccl.

    mmengine 0.10.7 also calls ``torch.cuda.set_device`` when it starts a
    torchrun (``pytorch``) process group, which a CPU-only torch cannot do;
    the Runner skips that when a group exists, so we start it here.
    """
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    # Assign, not setdefault: Config.setdefault returns a detached copy.
    env_cfg = dict(cfg.get('env_cfg') or {})
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    env_cfg['dist_cfg'] = dist_cfg
    cfg.env_cfg = env_cfg
    if launcher == 'pytorch' and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=dist_cfg['backend'])
    # mmengine passes device_ids=[LOCAL_RANK], which DDP rejects for CPU
    # modules; a value in the config takes precedence over that default.
    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False))
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper


def guard_training(cfg: Config) -> None:
    """Train with mmsa's safeguards, in place: the resumable loops
    (:mod:`~mmsa.engine.loops`), :class:`~mmsa.engine.checkpoints.
    AtomicCheckpointHook` for mmengine's ``CheckpointHook``, and
    :class:`~mmsa.engine.stop.TrainGuardHook` and
    :class:`~mmsa.engine.hooks.RunStateHook`. Each takes the options of
    what it replaces; a custom loop or checkpoint hook is kept as it is.
    """
    train_cfg = dict(cfg.get('train_cfg') or {})
    name = train_cfg.get('type')
    if name is None and 'by_epoch' in train_cfg:
        name = 'EpochBasedTrainLoop' if train_cfg.pop('by_epoch') else \
            'IterBasedTrainLoop'
    if name in LOOP_TYPES:
        train_cfg['type'] = LOOP_TYPES[name].__name__
        cfg.train_cfg = train_cfg
    hooks = dict(cfg.get('default_hooks') or {})
    checkpoint = hooks.get('checkpoint', dict(type='CheckpointHook',
                                              interval=1))
    if checkpoint is not None and checkpoint.get('type') in (
            'CheckpointHook', CheckpointHook):
        hooks['checkpoint'] = dict(checkpoint, type='AtomicCheckpointHook')
        cfg.default_hooks = hooks
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
        dict(type='TrainGuardHook'), dict(type='RunStateHook')
    ]


def build_runner(cfg: Config):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def is_main_process() -> bool:
    """Rank 0, read before mmengine sets up the process group: torchrun
    sets ``RANK``, slurm ``SLURM_PROCID``, Open MPI
    ``OMPI_COMM_WORLD_RANK``."""
    for var in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK'):
        if var in os.environ:
            return int(os.environ[var]) == 0
    return True


def run_cli(main: Callable[[], Optional[Config]],
            work_dir_of: Callable[[], Optional[str]] = lambda: None) -> None:
    """Run ``main``; mmsa's own errors end it with one line on stderr.

    An :class:`~mmsa.errors.MMSAError` (a config, dataset, checkpoint or
    work-dir error, a diverged or interrupted run) prints its line and
    exits with its status (1; ``128 + signal`` for an interruption); so
    does a full disk. Any other exception keeps its traceback, whatever its
    type: it is a bug, in mmsa or below. ``MMSA_DEBUG=1`` shows the
    traceback of all.

    ``work_dir_of`` gives the work dir (if known yet) where the end is
    recorded (``failed.json``, ``interrupted.json``; with the traceback),
    so a partial work dir never looks finished.
    """
    started = time.time()
    try:
        main()
    except MMSAError as err:
        _record(work_dir_of(), err.state_file, err, str(err), err.details)
        if debugging():
            raise
        if is_main_process() or err.exit_code == 1:
            print(err.one_line(), file=sys.stderr)
            if err.exit_code == 1:
                print(DEBUG_HINT, file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        if debugging():
            raise
        # Ctrl-C before training handles it (or in a tool that does not)
        print('stopped: interrupted (SIGINT); nothing was saved',
              file=sys.stderr)
        sys.exit(128 + 2)
    except Exception as err:
        work_dir = work_dir_of()
        if isinstance(err, OSError) and err.errno in DISK_FULL and \
                not debugging():
            message = disk_full_message(err, work_dir, started)
            _record(work_dir, FAILED, err, message)
            print(f'error: OSError: {message}', file=sys.stderr)
            print(DEBUG_HINT, file=sys.stderr)
            sys.exit(1)
        _record(work_dir, FAILED, err, str(err))
        raise


def _record(work_dir: Optional[str], name: str, err: BaseException,
            message: str, details: Optional[dict] = None) -> None:
    """Write the run's end into ``work_dir`` (main process; where there is
    a work dir and room on its disk)."""
    if not (work_dir and osp.isdir(work_dir) and is_main_process()):
        return
    try:
        write_state(work_dir, name, dict(
            error=type(err).__name__, message=message,
            traceback=traceback.format_exc(), **(details or {})))
    except OSError:
        pass  # no space left: the message on stderr says it all
