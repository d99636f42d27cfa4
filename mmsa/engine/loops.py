"""Training loops that continue an interrupted run where it stopped.

mmengine's ``EpochBasedTrainLoop`` resumes only at an epoch boundary: a
checkpoint saved mid-epoch makes it run that epoch again from its first
batch. :class:`ResumableEpochBasedTrainLoop` skips the batches the epoch
already trained instead (in the batch sampler, so their images are not even
loaded: the sampler's order depends only on its seed and the epoch), and
restores the random generators as they were when the run stopped. With
``num_workers=0`` the resumed run then ends with the weights of an
uninterrupted one, bit for bit; with workers, their augmentation draws
differ.

:class:`ResumableIterBasedTrainLoop` keeps mmengine's resuming (it skips the
used batches by loading them) and adds the rest: the generators, and a
validation a signal interrupted, run first.

Both build their data loader so that its workers ignore stop signals
(:func:`~mmsa.engine.stop.ignore_stop_signals`) and a file that fails to
load names itself (:class:`ReportingPipeline`), before any worker starts.
:class:`~mmsa.engine.stop.TrainGuardHook` hands them the interrupted run's
state (``resume_point``).
"""
import copy
import logging
from functools import partial
from typing import Dict, Iterator, List, Optional, Union

from mmengine.logging import print_log
from mmengine.registry import DATA_SAMPLERS, LOOPS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from torch.utils.data import BatchSampler, DataLoader, Sampler

from ..errors import DataLoadError, DatasetError
from .preflight import SegLabels
from .stop import ignore_stop_signals, set_rng_state


class SkippingBatchSampler(Sampler):
    """A batch sampler that can leave out the first batches of its next
    pass (:attr:`skip`), drawing them without yielding them.

    Built by mmengine's ``build_dataloader`` in place of the loader's own
    batch sampler, which it wraps.

    Args:
        sampler (Sampler): The loader's sampler.
        batch_size (int): The loader's batch size.
        batch_sampler (dict, optional): The loader's own batch sampler
            config (mmdet's ``AspectRatioBatchSampler`` ...); None:
            torch's ``BatchSampler``. Defaults to None.
        drop_last (bool): As the loader's. Defaults to False.
    """

    def __init__(self,
                 sampler: Sampler,
                 batch_size: int,
                 batch_sampler: Optional[dict] = None,
                 drop_last: bool = False) -> None:
        if batch_sampler is None:
            self.batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        else:
            self.batch_sampler = DATA_SAMPLERS.build(
                batch_sampler,
                default_args=dict(sampler=sampler, batch_size=batch_size))
        self.skip = 0

    @property
    def sampler(self) -> Sampler:
        """The wrapped sampler (mmengine sets its epoch through this)."""
        return self.batch_sampler.sampler

    def __iter__(self) -> Iterator[List[int]]:
        skip, self.skip = self.skip, 0
        batches = iter(self.batch_sampler)
        for _ in range(skip):
            next(batches, None)
        yield from batches

    def __len__(self) -> int:
        return len(self.batch_sampler)


class ReportingPipeline:
    """A dataset's pipeline that names the file a loading step failed on.

    Runs the transforms as mmcv's ``Compose`` does. An error in a
    transform that reads files (``LoadImageFromFile``,
    ``LoadAnnotations`` ...) becomes a :class:`~mmsa.errors.DataLoadError`
    naming the file, also when raised in a data-loader worker; an error in
    any other transform is left as it is. A segmentation label map holding
    values that are neither a class nor the ignore index is refused when
    loaded, before the loss fails on it.

    Args:
        pipeline: The dataset's pipeline (a ``Compose``).
        labels (SegLabels, optional): What a loaded label map may hold.
    """

    def __init__(self, pipeline, labels: Optional[SegLabels] = None) -> None:
        self.pipeline = pipeline
        self.transforms = list(pipeline.transforms)
        self.labels = labels

    def __call__(self, results: Dict) -> Optional[Dict]:
        for transform in self.transforms:
            name = type(transform).__name__
            if not name.startswith('Load'):
                results = transform(results)
            else:
                results = self._load(transform, name, results)
            if results is None:
                return None
        return results

    def _load(self, transform, name: str, results: Dict) -> Optional[Dict]:
        path = results.get('seg_map_path') if 'Annotations' in name \
            and results.get('seg_map_path') else results.get('img_path')
        try:
            loaded = transform(results)
        except Exception as err:
            raise DataLoadError.of(path, name, err) from err
        if loaded is not None and self.labels is not None and \
                'gt_seg_map' in loaded:
            bad = self.labels.outside(loaded['gt_seg_map'])
            if bad:
                raise DatasetError(self.labels.error(
                    loaded.get('seg_map_path'), bad, 'while training'))
        return loaded


def _leaves(dataset) -> Iterator:
    """The datasets inside mmengine's/torch's dataset wrappers."""
    if hasattr(dataset, 'datasets'):
        for inner in dataset.datasets:
            yield from _leaves(inner)
    elif hasattr(dataset, 'dataset'):
        yield from _leaves(dataset.dataset)
    else:
        yield dataset


def guard_dataloader(loader: DataLoader) -> DataLoader:
    """Make ``loader``'s workers ignore stop signals and its loading steps
    name the file they fail on (idempotent). Call it before the loader's
    first iteration: workers started before keep what they had."""
    init_fn = loader.worker_init_fn
    if loader.num_workers > 0 and not (isinstance(init_fn, partial) and
                                       init_fn.func is ignore_stop_signals):
        loader.worker_init_fn = partial(ignore_stop_signals, init_fn)
    for dataset in _leaves(loader.dataset):
        pipeline = getattr(dataset, 'pipeline', None)
        if pipeline is None or isinstance(pipeline, ReportingPipeline) or \
                not hasattr(pipeline, 'transforms'):
            continue
        labels = None
        if hasattr(dataset, 'ignore_index'):  # mmseg's datasets
            labels = SegLabels(len(dataset.metainfo['classes']),
                               dataset.ignore_index)
        dataset.pipeline = ReportingPipeline(pipeline, labels)
    return loader


def _train_loader(runner, dataloader: Union[DataLoader, Dict],
                  skipping: bool) -> DataLoader:
    """Build the training loader as mmengine's ``BaseLoop`` does, with a
    :class:`SkippingBatchSampler` where asked, and guard it."""
    if isinstance(dataloader, dict):
        cfg = copy.deepcopy(dataloader)
        if skipping:
            cfg['batch_sampler'] = dict(
                type=SkippingBatchSampler,
                batch_sampler=cfg.pop('batch_sampler', None),
                drop_last=cfg.pop('drop_last', False))
        dataloader = runner.build_dataloader(
            cfg,
            seed=runner.seed,
            diff_rank_seed=runner._randomness_cfg.get('diff_rank_seed',
                                                      False))
    return guard_dataloader(dataloader)


class _ResumePoint:
    """What the loops share: the interrupted run's state, and running the
    validation it interrupted."""

    #: Set by TrainGuardHook when the run resumes an interrupted one:
    #: ``batches_done`` of the epoch, ``val_pending``, ``rng`` (this
    #: rank's generator states).
    resume_point: Optional[Dict] = None

    def _take_resume_point(self) -> Dict:
        point, self.resume_point = self.resume_point or {}, None
        return point

    def _validate_if_due(self, done: int, total: int) -> None:
        """mmengine's rule: every ``val_interval`` epochs (iterations) from
        ``val_begin`` on, and after the last."""
        if (self.runner.val_loop is not None and done >= self.val_begin
                and (done % self.val_interval == 0 or done == total)):
            self.runner.val_loop.run()

    def _finish_interrupted_validation(self) -> None:
        """Where the run was stopped during a validation, restore its
        generators and run that validation."""
        if not (self.resume_point or {}).get('val_pending'):
            return
        point = self._take_resume_point()
        if point.get('rng'):
            set_rng_state(point['rng'])
        if self.runner.val_loop is not None:
            print_log('running the validation the interrupted run did not '
                      'finish', logger='current', level=logging.INFO)
            self.runner.val_loop.run()


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(_ResumePoint, EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` that resumes mid-epoch.

    Takes the same arguments; see the module docstring.
    """

    def __init__(self, runner, dataloader: Union[DataLoader, Dict],
                 *args, **kwargs) -> None:
        super().__init__(runner, _train_loader(runner, dataloader, True),
                         *args, **kwargs)
        if not isinstance(self.dataloader.batch_sampler,
                          SkippingBatchSampler):
            print_log(
                'the training data loader was built before the loop, so a '
                'run stopped mid-epoch resumes at the start of that epoch',
                logger='current', level=logging.WARNING)

    def run(self):
        """As mmengine's, after the validation an interrupted run owes."""
        self.runner.call_hook('before_train')
        self._finish_interrupted_validation()
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            self._decide_current_val_interval()
            self._validate_if_due(self._epoch, self._max_epochs)
        self.runner.call_hook('after_train')
        return self.runner.model

    def run_epoch(self) -> None:
        """One epoch; after an interruption, the rest of one."""
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        point = self._take_resume_point()
        start = point.get('batches_done', 0)
        sampler = self.dataloader.batch_sampler
        if start and isinstance(sampler, SkippingBatchSampler):
            sampler.skip = start
        elif start:
            start = 0  # the loader cannot skip: the epoch starts over
        batches = iter(self.dataloader)  # draws the workers' seeds
        if point.get('rng'):
            set_rng_state(point['rng'])
        for idx, data_batch in enumerate(batches, start):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(_ResumePoint, IterBasedTrainLoop):
    """mmengine's ``IterBasedTrainLoop`` with a guarded data loader, the
    generators restored on resume and an interrupted validation run first.

    Takes the same arguments; see the module docstring.
    """

    def __init__(self, runner, dataloader: Union[DataLoader, Dict],
                 *args, **kwargs) -> None:
        super().__init__(runner, _train_loader(runner, dataloader, False),
                         *args, **kwargs)

    def run(self):
        """As mmengine's, restoring the interrupted run's state first."""
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            print_log(
                f'Advance dataloader {self._iter} steps to skip data '
                'that has already been trained',
                logger='current',
                level=logging.WARNING)
            for _ in range(self._iter):
                next(self.dataloader_iterator)
        self._finish_interrupted_validation()
        point = self._take_resume_point()
        if point.get('rng'):
            set_rng_state(point['rng'])
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            self._validate_if_due(self._iter, self._max_iters)
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model


LOOP_TYPES = {
    'EpochBasedTrainLoop': ResumableEpochBasedTrainLoop,
    'IterBasedTrainLoop': ResumableIterBasedTrainLoop,
}
