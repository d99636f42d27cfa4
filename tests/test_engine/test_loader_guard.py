"""Training's data loaders: workers leave stopping to the main process, a
file that fails to load names itself (from a worker too), and a label map
with values that are no class is refused before the loss sees it."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from mmsa.engine.loops import SkippingBatchSampler, guard_dataloader
from mmsa.errors import DataLoadError, DatasetError


class Slow(Dataset):
    """Sixteen numbers, a little slowly."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> int:
        time.sleep(0.05)
        return i


def _signal_workers_while_iterating(loader: DataLoader,
                                    signum: int) -> list:
    """Another process (as a terminal or a scheduler would) signals the
    workers after the first batch."""
    batches = iter(loader)
    seen = [next(batches)]
    for worker in batches._workers:
        subprocess.run(['kill', f'-{signum}', str(worker.pid)], check=True)
    time.sleep(0.3)
    return seen + list(batches)


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT,
                                    signal.SIGUSR1])
def test_guarded_workers_ignore_stop_signals(signum):
    loader = guard_dataloader(DataLoader(Slow(), batch_size=2,
                                         num_workers=2))
    batches = _signal_workers_while_iterating(loader, signum)
    assert torch.cat(batches).tolist() == list(range(16))


def test_unguarded_workers_die_of_sigterm():
    unguarded = DataLoader(Slow(), batch_size=2, num_workers=2)
    with pytest.raises(RuntimeError, match='DataLoader worker'):
        _signal_workers_while_iterating(unguarded, signal.SIGTERM)


EXIT_WITH_A_LIVE_LOADER = '''
import sys
from torch.utils.data import DataLoader
from test_loader_guard import Slow
from mmsa.engine.loops import guard_dataloader
loader = guard_dataloader(DataLoader(Slow(), batch_size=2, num_workers=1))
KEPT = iter(loader)  # as a traceback keeps it when a run ends on an error
next(KEPT)
sys.exit(3)
'''


def test_process_ending_with_a_live_guarded_loader_does_not_hang():
    """At exit multiprocessing ends the workers still alive with their
    parent's SIGTERM, then waits for them: a worker must obey it."""
    result = subprocess.run(
        [sys.executable, '-c', EXIT_WITH_A_LIVE_LOADER], timeout=120,
        capture_output=True, text=True,
        env={**os.environ, 'PYTHONPATH': os.pathsep.join(
            [str(Path(__file__).parent), os.environ.get('PYTHONPATH', '')])})
    assert result.returncode == 3, result.stderr[-3000:]


def test_guarding_twice_wraps_once():
    loader = guard_dataloader(guard_dataloader(
        DataLoader(Slow(), num_workers=1)))
    assert loader.worker_init_fn.args == (None, )


def test_skipping_batch_sampler_leaves_out_the_first_batches_once():
    sampler = SkippingBatchSampler(range(10), batch_size=3)
    sampler.skip = 2
    assert list(sampler) == [[6, 7, 8], [9]]
    assert list(sampler) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert len(sampler) == 4


@pytest.fixture(scope='module')
def images(tmp_path_factory) -> Path:
    pytest.importorskip('mmcv')
    from mmsa.demo_data import generate
    root = tmp_path_factory.mktemp('loader_guard')
    generate(str(root), num_train=4, num_val=2, seed=5, size=(128, 128))
    return root


class Images(Dataset):
    """The demo's training images through an mmcv loading pipeline."""

    def __init__(self, root: Path) -> None:
        from mmcv.transforms import Compose, LoadImageFromFile
        self.paths = sorted((root / 'coco' / 'train').glob('*.jpg'))
        self.pipeline = Compose([LoadImageFromFile()])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.pipeline(dict(img_path=str(self.paths[i])))['img']


@pytest.mark.parametrize('workers', [0, 1])
def test_file_that_fails_to_load_in_training_is_one_line_naming_it(
        images, tmp_path, workers):
    root = Path(shutil.copytree(images, tmp_path / 'data'))
    broken = root / 'coco' / 'train' / 'train_00002.jpg'
    data = broken.read_bytes()
    broken.write_bytes(data[:len(data) // 2])  # the header survives
    loader = guard_dataloader(DataLoader(Images(root), batch_size=1,
                                         num_workers=workers))
    with pytest.raises(DataLoadError) as err:
        list(loader)
    assert str(err.value).startswith(
        f'{broken}: LoadImageFromFile failed while training read it '
        f'(AssertionError: failed to load image: {broken}); replace the '
        f'file or remove it from the dataset')
    assert '\n' not in str(err.value)  # not the worker's traceback
    # in a worker too, where torch rebuilds the error from its message
    assert err.value.details == dict(file=str(broken))


def test_label_values_that_are_no_class_are_refused_when_loaded(
        images, tmp_path):
    pytest.importorskip('mmseg')
    from mmengine.registry import DefaultScope
    from mmseg.datasets import BaseSegDataset
    from PIL import Image

    from mmsa.demo_data import SEG_CLASSES
    root = Path(shutil.copytree(images / 'ade', tmp_path / 'ade'))
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = BaseSegDataset(
            data_root=str(root), metainfo=dict(classes=SEG_CLASSES),
            img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True,
            data_prefix=dict(img_path='images/training',
                             seg_map_path='annotations/training'),
            pipeline=[dict(type='LoadAnnotations')])
    path = Path(dataset.get_data_info(1)['seg_map_path'])
    labels = np.array(Image.open(path))
    labels[:4, :4] = 9  # class 8 once reduced; the dataset has 4
    Image.fromarray(labels).save(path)
    guard_dataloader(DataLoader(dataset))
    dataset[0]
    with pytest.raises(DatasetError, match=(
            rf'^while training: label map {path} holds value\(s\) 8, which '
            r'are neither a class \(0 to 3\) nor ignore_index=255')):
        dataset[1]
