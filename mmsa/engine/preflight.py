"""Check a config's datasets before a run starts.

A missing image otherwise surfaces as a traceback from a dataloader worker
minutes into training; a malformed annotation file as a KeyError deep in
pycocotools. Here each becomes one error naming the file and the fix.
"""
import json
import os
import os.path as osp
from typing import Iterator, List

from mmengine.config import Config


class DatasetError(ValueError):
    """A dataset file is missing or malformed."""


def _datasets(cfg: dict) -> Iterator[dict]:
    """Leaf dataset configs inside wrappers (Repeat/Concat/ClassBalanced)."""
    if 'datasets' in cfg:
        for sub in cfg['datasets']:
            yield from _datasets(sub)
    elif 'dataset' in cfg:
        yield from _datasets(cfg['dataset'])
    else:
        yield cfg


def _join(root, path):
    return path if root is None or osp.isabs(path) else osp.join(root, path)


def check_coco(ann_file: str, img_dir: str, where: str) -> int:
    """Validate a COCO json and that every image it names exists."""
    if not osp.isfile(ann_file):
        raise DatasetError(f'{where}: annotation file {ann_file} does not '
                           f'exist; check data_root/ann_file')
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f'{where}: annotation file {ann_file} is not '
                           f'COCO json (not valid JSON: {err})') from None
    missing_keys = [k for k in ('images', 'annotations', 'categories')
                    if not isinstance(data, dict) or k not in data]
    if missing_keys:
        raise DatasetError(
            f'{where}: annotation file {ann_file} is not COCO json: missing '
            f'key(s) {missing_keys} (expected a dict with images, '
            f'annotations and categories)')
    for image in data['images']:
        name = image.get('file_name') if isinstance(image, dict) else None
        if name is None:
            raise DatasetError(f'{where}: {ann_file}: an entry of "images" '
                               f'has no file_name: {image!r}')
        path = osp.join(img_dir, name)
        if not osp.isfile(path):
            raise DatasetError(
                f'{where}: image file {path} (listed in {ann_file}) does '
                f'not exist')
    return len(data['images'])


def check_segmentation(img_dir: str, seg_dir: str, img_suffix: str,
                       seg_suffix: str, where: str) -> int:
    """Every image has its label map (mmseg's folder layout)."""
    for path, what in ((img_dir, 'img_path'), (seg_dir, 'seg_map_path')):
        if not osp.isdir(path):
            raise DatasetError(f'{where}: {what} directory {path} does not '
                               f'exist; check data_root/data_prefix')
    images = sorted(f for f in os.listdir(img_dir) if f.endswith(img_suffix))
    if not images:
        raise DatasetError(f'{where}: no *{img_suffix} images in {img_dir}')
    for name in images:
        seg = osp.join(seg_dir, name[:-len(img_suffix)] + seg_suffix)
        if not osp.isfile(seg):
            raise DatasetError(f'{where}: label map {seg} for image '
                               f'{osp.join(img_dir, name)} does not exist')
    return len(images)


def check_datasets(cfg: Config, splits: List[str]) -> None:
    """Validate the datasets of ``splits`` (e.g. ``['train_dataloader']``).

    Only layouts this module knows are checked (COCO json with
    ``ann_file``; mmseg folders with ``img_path``/``seg_map_path``); others
    are left to the framework.
    """
    for split in splits:
        loader = cfg.get(split)
        if not loader:
            continue
        for ds in _datasets(loader['dataset']):
            root = ds.get('data_root')
            prefix = ds.get('data_prefix') or {}
            where = f'{split}.dataset'
            if ds.get('ann_file', '').endswith('.json'):
                img_dir = _join(root, prefix.get('img', ''))
                check_coco(_join(root, ds['ann_file']), img_dir, where)
            elif 'seg_map_path' in prefix:
                check_segmentation(
                    _join(root, prefix.get('img_path', '')),
                    _join(root, prefix['seg_map_path']),
                    ds.get('img_suffix', '.jpg'),
                    ds.get('seg_map_suffix', '.png'), where)
