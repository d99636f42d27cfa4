"""What ``tools/train.py`` and ``tools/test.py`` share.

One pair of tools serves detection and segmentation configs: the config's
``default_scope`` (``mmdet``/``mmseg``) picks the framework, as in
mmdet's/mmseg's own tools.
"""
import json
import os
import os.path as osp
import sys
import time
import traceback
from typing import Callable, Optional

import torch
from mmengine.config import Config

from .hooks import FAILED, write_state
from .preflight import DatasetError
from .workdir import DISK_FULL, WorkDirBusyError, disk_full_message

# Errors caused by the user's input (config, files). They end the run with
# one line; anything else keeps its traceback. MMSA_DEBUG=1 shows all.
USER_ERRORS = (DatasetError, FileNotFoundError, KeyError, ValueError,
               TypeError, ImportError, json.JSONDecodeError,
               WorkDirBusyError)


def load_config(path: str, cfg_options: Optional[dict]) -> Config:
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path} does not exist')
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
    """Run ``main``; a user error becomes one line on stderr and exit 1.

    ``work_dir_of`` gives the work dir (if known yet) where ``failed.json``
    records the error, so a partial work dir never looks finished.
    """
    started = time.time()
    try:
        main()
    except USER_ERRORS as err:
        if os.environ.get('MMSA_DEBUG'):
            raise
        message = str(err.args[0]) if isinstance(err, KeyError) and \
            err.args else str(err)
        work_dir = work_dir_of()
        if work_dir and osp.isdir(work_dir) and is_main_process():
            write_state(work_dir, FAILED, dict(
                error=type(err).__name__, message=message,
                traceback=traceback.format_exc()))
        print(f'error: {type(err).__name__}: {message}', file=sys.stderr)
        print('(set MMSA_DEBUG=1 for the traceback)', file=sys.stderr)
        sys.exit(1)
    except OSError as err:
        if err.errno not in DISK_FULL or os.environ.get('MMSA_DEBUG'):
            raise
        _end_disk_full(err, work_dir_of(), started)


def _end_disk_full(err: OSError, work_dir: Optional[str],
                   started: float) -> None:
    """One line instead of mmengine's raw OSError when the disk fills,
    after removing the checkpoint it left incomplete."""
    message = disk_full_message(err, work_dir, started)
    if work_dir and osp.isdir(work_dir) and is_main_process():
        try:
            write_state(work_dir, FAILED, dict(
                error='OSError', message=message,
                traceback=traceback.format_exc()))
        except OSError:
            pass  # still no space: the message below says it all
    print(f'error: OSError: {message}', file=sys.stderr)
    print('(set MMSA_DEBUG=1 for the traceback)', file=sys.stderr)
    sys.exit(1)
