"""A smoke run of any config: ``tools/train.py CONFIG --smoke [N]``.

Trains N iterations, then evaluates on the first few validation images,
with the config's model, data pipeline, optimizer and evaluator. It checks
that a setup works end to end (data found, model built, a loss goes
backward, the metric runs) in minutes; its numbers mean nothing.
"""

from mmengine.config import Config

from ..errors import ConfigError
from .preflight import leaf_datasets

SMOKE_VAL_IMAGES = 8


def make_smoke(cfg: Config, iters: int,
               val_images: int = SMOKE_VAL_IMAGES) -> None:
    """Turn ``cfg`` into a smoke run, in place.

    Args:
        cfg (Config): A loaded training config.
        iters (int): Training iterations; validation runs once after them.
        val_images (int): Images of the validation set to evaluate (the
            first ones, via mmengine's ``indices``). Defaults to 8.
    """
    if iters < 1:
        raise ConfigError(f'--smoke {iters}: give a positive number of '
                          f'iterations, e.g. --smoke 2')
    # Iteration-based whatever the config's loop: mmengine's
    # EpochBasedTrainLoop takes no max_iters.
    cfg.train_cfg = dict(
        type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
    train = cfg.get('train_dataloader')
    if train is not None:
        batch = train.get('batch_size', 1)
        for dataset in leaf_datasets(train):
            dataset['indices'] = iters * batch
    for name in ('val_dataloader', 'test_dataloader'):
        loader = cfg.get(name)
        if loader is not None:
            for dataset in leaf_datasets(loader):
                dataset['indices'] = val_images
    hooks = cfg.get('default_hooks') or {}
    hooks['logger'] = dict(type='LoggerHook', interval=1)
    hooks['checkpoint'] = dict(
        type='CheckpointHook', by_epoch=False, interval=iters,
        max_keep_ckpts=1)
    cfg.default_hooks = hooks
    # The config's loop ran per epoch; the runner must count iterations.
    cfg.log_processor = dict(
        dict(cfg.get('log_processor') or {}), by_epoch=False)
