"""The checkpoint files of a run: checked before they are used, written so
that no kill leaves a partial file or nothing to resume from.

Reading. :func:`check_checkpoint` is the one gate for a file a user hands
mmsa (``tools/test.py``'s checkpoint, ``--resume FILE``, the file
``last_checkpoint`` names, ``load_from``, ``init_cfg=dict(type=
'Pretrained')``, the analysis tools). It loads the file weights-only
(:func:`~mmsa.utils.safe_load`: a file that needs code to load is refused,
a truncated or foreign file is named as such) and compares its tensors with
the model's, so a checkpoint of another model is refused too.
:func:`check_run_checkpoints` applies it to every file a config will load,
before the runner exists: a refused file ends the run before anything ran.

Writing. mmengine's ``CheckpointHook`` writes a checkpoint in place and,
with ``max_keep_ckpts``, deletes the previous one before it writes the
next: a kill during the save leaves a partial file and nothing complete.
:class:`AtomicCheckpointHook` writes each file aside and renames it
(:class:`AtomicLocalBackend`), then points ``last_checkpoint`` at it (also
written aside), and only then deletes what ``max_keep_ckpts`` drops; a
new best checkpoint (``save_best``) likewise replaces the previous best
only once it is complete.
"""
import logging
import os
import os.path as osp
import re
from typing import Any, Dict, Iterator, List, Optional, Union

import torch.nn as nn
from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ..errors import CheckpointMismatchError, UnreadableCheckpointError
from ..utils.checkpoint import safe_load

ATOMIC_BACKEND = 'mmsa_atomic_local'
PARTIAL_SUFFIX = '.part'
LAST_CHECKPOINT = 'last_checkpoint'
# An interrupted run's checkpoint, until a regular one supersedes it.
RESUME_POINT_INFO = 'mmsa_resume_point'
_REMOTE = re.compile(r'^[\w+.-]+://')


def atomic_write(path: Union[str, os.PathLike], data: bytes) -> None:
    """Write ``data`` to ``path`` without ever leaving a partial ``path``.

    The bytes go to ``path + '.part'``, are flushed to the disk, then the
    file is renamed over ``path`` (atomic on POSIX file systems). On an
    error the partial file is removed; a kill leaves it beside ``path``,
    never in its place.
    """
    path = os.fspath(path)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    partial = path + PARTIAL_SUFFIX
    try:
        with open(partial, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        try:
            os.remove(partial)
        except OSError:
            pass
        raise


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, writing through :func:`atomic_write`.
    """

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(filepath, obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(filepath, obj.encode(encoding))


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


def point_last_checkpoint(work_dir: str, path: str) -> None:
    """Make ``WORK_DIR/last_checkpoint`` name ``path``, atomically."""
    atomic_write(osp.join(work_dir, LAST_CHECKPOINT), path.encode())


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose saves a kill cannot break.

    Takes the same arguments and saves the same files. The differences:
    a file is written aside and renamed into place, ``last_checkpoint`` is
    updated only after that, and a checkpoint ``max_keep_ckpts`` drops is
    deleted only after both; so is the previous best checkpoint
    (``save_best``), which mmengine deletes before writing the new one. A
    checkpoint of an interrupted run
    (:func:`save_resume_point`) is deleted once a regular one follows it.
    Applies to local work dirs; with another ``backend_args`` or a remote
    ``out_dir`` the hook saves as mmengine's does.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.atomic = (self.backend_args is None
                       and self.file_client_args is None
                       and (self.out_dir is None
                            or not _REMOTE.match(str(self.out_dir))))
        if self.atomic:
            self.backend_args = dict(backend=ATOMIC_BACKEND)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self.atomic and is_main_process() and osp.isdir(self.out_dir):
            # left by a run killed while it saved
            for name in os.listdir(self.out_dir):
                if name.endswith('.pth' + PARTIAL_SUFFIX):
                    _remove(osp.join(self.out_dir, name))

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not self.atomic:
            super()._save_checkpoint_with_step(runner, step, meta)
            return
        dropped = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                dropped.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        superseded = runner.message_hub.runtime_info.pop(
            RESUME_POINT_INFO, None)
        name = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, name)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            name,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        point_last_checkpoint(runner.work_dir, self.last_ckpt)
        for old in dropped:
            _remove(osp.join(self.out_dir, self.filename_tmpl.format(old)))
        if superseded and superseded != self.last_ckpt:
            _remove(superseded)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        if not self.atomic:
            super()._save_best_checkpoint(runner, metrics)
            return
        backend = self.file_backend
        self.file_backend = _DeferredRemoval(backend)
        try:
            super()._save_best_checkpoint(runner, metrics)
            removals = self.file_backend.removals
        finally:
            self.file_backend = backend
        # one key indicator: best_ckpt_path; several: best_ckpt_path_dict
        kept = {getattr(self, 'best_ckpt_path', None),
                *getattr(self, 'best_ckpt_path_dict', {}).values()}
        for path in removals:
            if path not in kept:
                _remove(path)


class _DeferredRemoval:
    """A file backend whose ``remove`` only records the path, for the
    caller to delete once the file replacing it is written."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self.removals: List[str] = []

    def remove(self, path) -> None:
        self.removals.append(str(path))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def save_resume_point(runner, meta: Dict) -> str:
    """Save a checkpoint ``--resume`` continues from, and point
    ``last_checkpoint`` at it; returns its path (on every rank).

    Written as ``iter_{meta['iter']}.pth`` through the run's checkpoint
    hook's directory, atomically where the hook is an
    :class:`AtomicCheckpointHook`. The next regular checkpoint of the run
    (or of the run resumed from it) deletes it.
    """
    hook = next((h for h in runner.hooks if isinstance(h, CheckpointHook)),
                None)
    out_dir = getattr(hook, 'out_dir', None) or runner.work_dir
    backend_args = getattr(hook, 'backend_args', None) \
        if isinstance(hook, AtomicCheckpointHook) and hook.atomic \
        else dict(backend=ATOMIC_BACKEND)
    name = f'iter_{meta["iter"]}.pth'
    path = osp.join(out_dir, name)
    runner.message_hub.update_info(RESUME_POINT_INFO, path)
    runner.save_checkpoint(out_dir, name, meta=dict(meta), by_epoch=False,
                           backend_args=backend_args)
    if is_main_process():
        point_last_checkpoint(runner.work_dir, path)
    return path


# Reading: the gate.


def _weights(checkpoint: Any) -> Optional[Dict[str, Any]]:
    """The state dict mmengine would load from ``checkpoint``, if any."""
    state = checkpoint.get('state_dict', checkpoint) \
        if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not any(
            hasattr(v, 'shape') for v in state.values()):
        return None
    return {re.sub(r'^module\.', '', k): v for k, v in state.items()}


def _examples(names: List[str], n: int = 3) -> str:
    return ', '.join(names[:n]) + (', ...' if len(names) > n else '')


def _check_fits(path: str, weights: Dict[str, Any], model: nn.Module,
                strict: bool) -> None:
    expected = {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if not k.endswith('num_batches_tracked')
    }
    given = {k: tuple(v.shape) for k, v in weights.items()
             if hasattr(v, 'shape')}
    fitting = [k for k in expected if given.get(k) == expected[k]]
    missing = [k for k in expected if k not in given]
    reshaped = [k for k in expected if k in given and k not in fitting]
    model_name = type(model).__name__
    if fitting and not (strict and (missing or reshaped)):
        return
    if not fitting:
        raise CheckpointMismatchError(
            f'checkpoint {path} does not fit this config\'s model '
            f'({model_name}): none of its {len(given)} tensors '
            f'({_examples(sorted(given))}) is a tensor of the model '
            f'({_examples(list(expected))}) with the same shape. It was '
            f'written for another model: use the config it was trained '
            f'with (its work dir keeps a copy)')
    parts = []
    if missing:
        parts.append(f'{len(missing)} of the model\'s {len(expected)} '
                     f'tensors are not in it ({_examples(missing)})')
    if reshaped:
        k = reshaped[0]
        parts.append(f'{len(reshaped)} have another shape ({k}: '
                     f'checkpoint {given[k]}, model {expected[k]})')
    raise CheckpointMismatchError(
        f'checkpoint {path} does not fit this config\'s model '
        f'({model_name}): {"; ".join(parts)}. It was written for another '
        f'model (another architecture, attention, depth or number of '
        f'classes): use the config it was trained with (its work dir keeps '
        f'a copy)')


def check_checkpoint(path: str,
                     model: Optional[nn.Module] = None,
                     strict: bool = False,
                     resume: bool = False) -> Any:
    """Refuse a checkpoint file before anything uses it.

    Args:
        path (str): A local checkpoint file.
        model (nn.Module, optional): The model it will be loaded into (on
            the meta device is enough); None skips the comparison.
            Defaults to None.
        strict (bool): Every tensor of the model must be in the file with
            its shape (testing, resuming). Otherwise one is enough
            (``load_from``, which also serves fine-tuning to other
            classes). Defaults to False.
        resume (bool): The file must be a training checkpoint (mmengine's
            ``meta`` with ``epoch`` and ``iter``). Defaults to False.

    Returns:
        The loaded checkpoint.

    Raises:
        CheckpointNotFoundError: No file at ``path``.
        UnsafeCheckpointError: The file needs code to load; none ran.
        UnreadableCheckpointError: Empty, truncated, or not a checkpoint.
        CheckpointMismatchError: Written for another model, or not a
            training checkpoint where ``resume`` needs one.
    """
    checkpoint = safe_load(path)
    weights = _weights(checkpoint)
    if weights is None:
        what = f'a dict with keys {_examples(sorted(map(str, checkpoint)))}'\
            if isinstance(checkpoint, dict) else f'a {type(checkpoint)}'
        raise UnreadableCheckpointError(
            f'cannot load checkpoint {path}: it holds no model weights (it '
            f'is {what}); check that the path names a checkpoint of a '
            f'model (a state_dict of tensors, as torch.save or mmengine '
            f'write them)')
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if resume and not (isinstance(meta, dict) and isinstance(
            meta.get('epoch'), int) and isinstance(meta.get('iter'), int)):
        raise CheckpointMismatchError(
            f'cannot resume from {path}: it is not a training checkpoint '
            f'of mmengine (no meta with epoch and iter), so there is no '
            f'run to continue; to start a run from its weights, give it as '
            f'load_from instead of --resume')
    if model is not None:
        _check_fits(path, weights, model, strict)
    return checkpoint


def _pretrained_files(node: Any) -> Iterator[str]:
    """Local files named by ``init_cfg=dict(type='Pretrained',
    checkpoint=...)`` and ``pretrained=...`` anywhere in a model config."""
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained' and isinstance(
                node.get('checkpoint'), str):
            yield node['checkpoint']
        if isinstance(node.get('pretrained'), str):
            yield node['pretrained']
        for value in node.values():
            yield from _pretrained_files(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _pretrained_files(value)


def _local(path: str) -> bool:
    return not _REMOTE.match(path) and not re.match(r'\S+:s3://', path)


def resume_file(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` without a file continues from: the one
    ``WORK_DIR/last_checkpoint`` names, or None when there is none."""
    pointer = osp.join(work_dir, LAST_CHECKPOINT)
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        named = f.read().strip()
    if not named:
        raise UnreadableCheckpointError(
            f'cannot resume: {pointer} is empty, so it names no checkpoint; '
            f'pick one of the run\'s checkpoints with --resume FILE')
    return named


def check_run_checkpoints(cfg: Config,
                          model: Optional[nn.Module],
                          testing: bool = False) -> List[str]:
    """Check every local checkpoint file ``cfg`` will load, in the order
    the run loads them, and fix which one a resume reads.

    ``cfg.resume`` without ``cfg.load_from`` (``--resume`` alone) is
    resolved here to the file ``last_checkpoint`` names, so the runner
    reads exactly the file that was checked. Files given as addresses
    (``https://``, ``open-mmlab://`` ...) are checked as they are read.

    Args:
        cfg (Config): The run's config (``tools/train.py``, or
            ``tools/test.py`` after ``load_from`` is set).
        model (nn.Module, optional): ``cfg.model`` built (e.g. on the meta
            device by :func:`~mmsa.engine.model_check.check_model`).
        testing (bool): A test run: ``load_from`` must hold every tensor
            of the model, and ``Pretrained`` files are not read (the
            runner does not initialise weights for a test). Defaults to
            False.

    Returns:
        list[str]: The files checked.
    """
    checked = []
    pretrained = () if testing else _pretrained_files(cfg.get('model'))
    for path in dict.fromkeys(pretrained):
        if _local(path):
            check_checkpoint(path)
            checked.append(path)
    resume = bool(cfg.get('resume')) and not testing
    path = cfg.get('load_from')
    if resume and path is None:
        path = resume_file(cfg.work_dir)
        if path is None:
            print_log(f'--resume: {cfg.work_dir} has no last_checkpoint; the '
                      f'run starts from the beginning', logger='current',
                      level=logging.WARNING)
        cfg.load_from = path
    if path is not None and _local(path):
        check_checkpoint(path, model, strict=resume or testing,
                         resume=resume)
        checked.append(path)
    return checked
