"""Check a config's datasets before a run starts.

A missing image otherwise surfaces as a traceback from a dataloader worker
minutes into training; a malformed annotation file as a KeyError deep in
pycocotools. Here each becomes one error naming the file and the fix.

Images are decoded: their headers always, the whole image where that is
cheap (``preflight.decode``), so a file whose data is cut short is found
here too. Segmentation label maps are checked for values that are neither
a class nor the ignore index (the loss would fail on them).

For COCO training sets it also counts what mmdet's ``CocoDataset`` would
silently drop (boxes under 1 px or with negative size or zero area, boxes
outside their image, category ids outside the classes, instances whose
polygons all have fewer than 3 points when masks are trained, images left
without annotations) and stops the run when that exceeds
``preflight.max_drop_ratio`` of the annotations, or when nothing usable is
left.
"""
import json
import logging
import math
import os
import os.path as osp
from collections import Counter
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence

import numpy as np
from mmengine.config import Config
from mmengine.logging import print_log

from ..errors import ConfigError, DatasetError

# Share of a training set's annotations the framework may drop before the
# run stops (config key ``preflight.max_drop_ratio``). COCO train2017 loses
# well under 0.1%; a systematic error (widths as x2, category ids off by
# one, classes not in metainfo) loses far more.
MAX_DROP_RATIO = 0.01
# ``preflight.decode``: 'header' reads image headers only, 'full' decodes
# every image (and label map), 'auto' decodes fully when a dataset's files
# total at most FULL_DECODE_BYTES (about 1 s of decoding on one core).
DECODE_MODES = ('auto', 'header', 'full')
FULL_DECODE_BYTES = 64 * 2**20
IMAGE_KEYS = ('id', 'file_name', 'height', 'width')
ANNOTATION_KEYS = ('id', 'image_id', 'category_id', 'bbox', 'area')
DROP_REASONS = {
    'outside': 'outside their image',
    'invalid': 'with width or height < 1 px (or area <= 0)',
    'category': 'with a category_id not among the classes',
    'orphan': 'whose image_id is not in "images"',
    'polygon': 'whose polygons all have fewer than 3 points (masks)',
}


def leaf_datasets(cfg: dict) -> Iterator[dict]:
    """Leaf dataset configs inside wrappers (Repeat/Concat/ClassBalanced)."""
    if 'datasets' in cfg:
        for sub in cfg['datasets']:
            yield from leaf_datasets(sub)
    elif 'dataset' in cfg:
        yield from leaf_datasets(cfg['dataset'])
    else:
        yield cfg


def _join(root, path):
    return path if root is None or osp.isabs(path) else osp.join(root, path)


def _unreadable(path: str, full: bool = False) -> Optional[str]:
    """Why ``path`` is not an image, or None when it can be decoded.

    Pillow parses the header (cheap enough for every image of a large
    set) and, if ``full``, decodes the data, which finds a file cut short.
    A file Pillow cannot identify is tried with OpenCV, which mmcv decodes
    with, before it is refused.
    """
    if osp.getsize(path) == 0:
        return 'the file is empty (0 bytes)'
    reason = 'not an image OpenCV can decode'
    try:
        from PIL import Image
        image = Image.open(path)
    except ImportError:
        pass
    except (OSError, SyntaxError, ValueError) as err:
        reason = f'not an image Pillow or OpenCV can decode ({err})'
    else:
        with image:
            try:
                if full:
                    image.load()
                return None
            except (OSError, SyntaxError, ValueError) as err:
                # OpenCV would decode the part that is there, silently
                return f'its image data is truncated or corrupt ({err})'
    import cv2
    return None if cv2.imread(path) is not None else reason


def check_image_file(path: str, where: str, entry: str,
                     full: bool = False) -> None:
    """One error naming the file and its entry when it cannot be read.

    Args:
        path (str): The image file.
        where (str): The config path of the dataset, for messages.
        entry (str): Where the dataset lists the file, for messages.
        full (bool): Decode the whole image, not only its header.
            Defaults to False.
    """
    reason = _unreadable(path, full)
    if reason:
        raise DatasetError(f'{where}: image file {path} ({entry}) cannot be '
                           f'read: {reason}; replace the file or remove its '
                           f'entry')


def decode_fully(paths: Sequence[str], decode: str) -> bool:
    """Whether ``preflight.decode`` asks for whole images for ``paths``."""
    if decode == 'auto':
        return sum(osp.getsize(p) for p in paths) <= FULL_DECODE_BYTES
    return decode == 'full'


def _missing(entry: dict, keys: Sequence[str]) -> List[str]:
    return [k for k in keys if k not in entry]


def check_coco(ann_file: str,
               img_dir: str,
               where: str,
               classes: Optional[Sequence[str]] = None,
               filter_cfg: Optional[dict] = None,
               max_drop_ratio: Optional[float] = None,
               with_mask: bool = False,
               decode: str = 'auto') -> int:
    """Validate a COCO json, every image it names and what mmdet keeps.

    Args:
        ann_file (str): The COCO json.
        img_dir (str): Directory the ``file_name`` entries are relative to.
        where (str): The config path of the dataset, for messages.
        classes (Sequence[str], optional): The dataset's classes; like
            mmdet, annotations of other categories are dropped. None: every
            category of the file. Defaults to None.
        filter_cfg (dict, optional): The dataset's ``filter_cfg``
            (``filter_empty_gt``, ``min_size``); None keeps every image, as
            mmdet does in test mode. Defaults to None.
        max_drop_ratio (float, optional): Stop when more than this share
            of the annotations would be dropped, or none is usable; None
            only reports (validation and test sets). Defaults to None.
        with_mask (bool): The pipeline loads masks, so mmdet ignores an
            instance whose polygons all have fewer than 3 points. Defaults
            to False.
        decode (str): ``preflight.decode``, see :data:`DECODE_MODES`.
            Defaults to ``'auto'``.

    Returns:
        int: The number of images.
    """
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
    if not data['images']:
        raise DatasetError(f'{where}: annotation file {ann_file} lists no '
                           f'images ("images" is empty); check ann_file')
    files = []
    for i, image in enumerate(data['images']):
        entry = f'images[{i}] of {ann_file}'
        if not isinstance(image, dict) or 'file_name' not in image:
            raise DatasetError(f'{where}: {ann_file}: an entry of "images" '
                               f'has no file_name: {image!r}')
        missing = _missing(image, IMAGE_KEYS)
        if missing:
            raise DatasetError(
                f'{where}: {entry} ({image["file_name"]}) has no '
                f'{", ".join(missing)}; every image entry needs '
                f'{", ".join(IMAGE_KEYS)}')
        path = osp.join(img_dir, image['file_name'])
        if not osp.isfile(path):
            raise DatasetError(
                f'{where}: image file {path} (listed in {ann_file}) does '
                f'not exist')
        files.append((path, entry))
    full = decode_fully([path for path, _ in files], decode)
    for path, entry in files:
        check_image_file(path, where, entry, full)
    drops = count_drops(data, ann_file, where, classes, filter_cfg,
                        with_mask)
    _report(drops, ann_file, where, classes, max_drop_ratio)
    return len(data['images'])


def count_drops(data: dict, ann_file: str, where: str,
                classes: Optional[Sequence[str]],
                filter_cfg: Optional[dict],
                with_mask: bool = False) -> Dict:
    """What mmdet's ``CocoDataset`` drops from ``data``, silently.

    Mirrors ``parse_data_info`` (per annotation: an ``ignore`` flag skips
    it; a box under 1 px, negative included, or with ``area <= 0``; a box
    with no overlap with its image; a category outside the classes),
    ``LoadAnnotations(with_mask=True)`` (a polygon of fewer than 3 points
    is dropped, an instance left with none is ignored) and ``filter_data``
    (``filter_empty_gt``: images without an annotation of the classes;
    ``min_size``). The first matching reason is counted.
    """
    images = {}
    for i, image in enumerate(data['images']):
        if image['id'] in images:
            # pycocotools keeps the last entry of an id, silently
            raise DatasetError(
                f'{where}: images[{i}] of {ann_file} ({image["file_name"]}) '
                f'reuses the id {image["id"]!r} of '
                f'{images[image["id"]]["file_name"]}; image ids must be '
                f'unique')
        images[image['id']] = image
    ann_ids = set()
    known = {c.get('id') for c in data['categories'] if isinstance(c, dict)
             and (classes is None or c.get('name') in classes)}
    dropped: Counter = Counter()
    unknown: Counter = Counter()
    usable: Counter = Counter()
    with_class = set()
    total = polygons = 0
    for j, ann in enumerate(data['annotations']):
        entry = f'annotations[{j}] of {ann_file}'
        missing = _missing(ann, ANNOTATION_KEYS) if isinstance(
            ann, dict) else list(ANNOTATION_KEYS)
        if missing:
            raise DatasetError(
                f'{where}: {entry} has no {", ".join(missing)}; every '
                f'annotation needs {", ".join(ANNOTATION_KEYS)}')
        if ann['id'] in ann_ids:
            # mmdet asserts this deep inside the dataset's construction
            raise DatasetError(f'{where}: {entry} reuses the annotation id '
                               f'{ann["id"]!r}; annotation ids must be '
                               f'unique')
        ann_ids.add(ann['id'])
        box = ann['bbox']
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(
                isinstance(v, (int, float)) for v in box)):
            raise DatasetError(f'{where}: {entry} has bbox={box!r}; a COCO '
                               f'box is [x, y, width, height]')
        image = images.get(ann['image_id'])
        if image is not None and ann['category_id'] in known:
            with_class.add(ann['image_id'])
        if ann.get('ignore', False):
            continue
        total += 1
        x1, y1, w, h = box
        rings = ann.get('segmentation')
        degenerate = [p for p in rings if len(p) < 6 or len(p) % 2] \
            if isinstance(rings, list) else []
        polygons += len(degenerate) if with_mask else 0
        if image is None:
            dropped['orphan'] += 1
        elif ann['area'] <= 0 or w < 1 or h < 1:
            dropped['invalid'] += 1
        elif (max(0, min(x1 + w, image['width']) - max(x1, 0)) *
              max(0, min(y1 + h, image['height']) - max(y1, 0))) == 0:
            dropped['outside'] += 1
        elif ann['category_id'] not in known:
            dropped['category'] += 1
            unknown[ann['category_id']] += 1
        elif with_mask and isinstance(rings, list) and \
                len(degenerate) == len(rings):
            dropped['polygon'] += 1
        elif not ann.get('iscrowd', False):
            usable[ann['image_id']] += 1
    kept, images_dropped = list(images.values()), Counter()
    if filter_cfg is not None:
        empty_gt = filter_cfg.get('filter_empty_gt', False)
        min_size = filter_cfg.get('min_size', 0)
        kept = []
        for image in images.values():
            if empty_gt and image['id'] not in with_class:
                images_dropped['no annotation of the classes'] += 1
            elif min(image['width'], image['height']) < min_size:
                images_dropped[f'smaller than min_size={min_size}'] += 1
            else:
                kept.append(image)
    return dict(
        annotations=total, dropped=dropped, unknown=unknown,
        polygons=polygons, images=len(images), images_dropped=images_dropped,
        boxes=sum(usable[image['id']] for image in kept),
        images_without_box=sum(1 for image in kept
                               if not usable[image['id']]))


def _report(drops: Dict, ann_file: str, where: str,
            classes: Optional[Sequence[str]],
            max_drop_ratio: Optional[float]) -> None:
    """Stop a training set that loses too much; else log what is lost."""
    lost = sum(drops['dropped'].values())
    parts = [f'{n} {DROP_REASONS[k]}' for k, n in drops['dropped'].items()]
    if drops['unknown']:
        ids = sorted(drops['unknown'])
        parts[list(drops['dropped']).index('category')] += (
            f' (category_id {", ".join(map(str, ids[:5]))}'
            f'{", ..." if len(ids) > 5 else ""}; classes: '
            f'{tuple(classes) if classes is not None else "all"})')
    parts += [f'{n} image(s) with {why}' if why.startswith('no') else
              f'{n} image(s) {why}'
              for why, n in drops['images_dropped'].items()]
    if drops['polygons']:
        parts.append(f'{drops["polygons"]} polygon(s) with fewer than 3 '
                     f'points')
    summary = (f'{where}: {ann_file}: of {drops["annotations"]} '
               f'annotations on {drops["images"]} images, mmdet would drop '
               + ('; '.join(parts) or 'nothing'))
    fix = ('fix those annotations (a COCO bbox is [x, y, width, height]; '
           'a category_id must name a category of the dataset\'s metainfo '
           'classes)')
    ratio = lost / max(drops['annotations'], 1)
    if max_drop_ratio is not None and drops['boxes'] == 0:
        raise DatasetError(f'{summary}: no usable box is left to train on; '
                           f'{fix}')
    if max_drop_ratio is not None and ratio > max_drop_ratio:
        allow = math.ceil(ratio * 100) / 100
        raise DatasetError(
            f'{summary}: {ratio:.1%} of the annotations, more than '
            f'preflight.max_drop_ratio={max_drop_ratio}; {fix}, or accept '
            f'the loss with --cfg-options preflight.max_drop_ratio={allow}')
    if parts or drops['images_without_box']:
        print_log(f'{summary}; {drops["images_without_box"]} image(s) '
                  f'would train with no box', logger='current',
                  level=logging.WARNING)


class SegLabels(NamedTuple):
    """What a segmentation dataset's label maps may hold.

    Attributes:
        num_classes (int): Values ``0 .. num_classes - 1`` are classes.
        ignore_index (int): The value the loss ignores.
        reduce_zero_label (bool): The file's values are reduced as mmseg's
            ``LoadAnnotations`` does: 0 becomes ``255``, others shift by 1.
    """
    num_classes: int
    ignore_index: int = 255
    reduce_zero_label: bool = False

    def outside(self, values: np.ndarray) -> List[int]:
        """The distinct ``values`` that are neither a class nor ignored."""
        values = np.unique(values).astype(np.int64)
        loaded = values
        if self.reduce_zero_label:
            loaded = np.where(values == 0, 255, values - 1)
            loaded[loaded == 254] = 255
        bad = (loaded >= self.num_classes) & (loaded != self.ignore_index)
        return values[bad | (loaded < 0)].tolist()

    def error(self, path: str, bad: Sequence[int], where: str) -> str:
        shown = ', '.join(map(str, bad[:8])) + (', ...' if len(bad) > 8
                                                 else '')
        reduced = ' in the file, 1 to num_classes once reduce_zero_label ' \
            'subtracts 1' if self.reduce_zero_label else ''
        return (f'{where}: label map {path} holds value(s) {shown}, which '
                f'are neither a class (0 to {self.num_classes - 1}{reduced})'
                f' nor ignore_index={self.ignore_index}; the loss would '
                f'fail on them (on a GPU: a device-side assert). Fix the '
                f'label map, or the dataset\'s classes or reduce_zero_label')


def check_label_map(path: str, labels: SegLabels, where: str) -> None:
    """Refuse a label map holding values that are no class (decodes it)."""
    from PIL import Image
    with Image.open(path) as image:
        values = np.asarray(image)
    bad = labels.outside(values)
    if bad:
        raise DatasetError(labels.error(path, bad, where))


def check_segmentation(img_dir: str,
                       seg_dir: str,
                       img_suffix: str,
                       seg_suffix: str,
                       where: str,
                       labels: Optional[SegLabels] = None,
                       decode: str = 'auto') -> int:
    """Every image has its label map (mmseg's folder layout), both decode
    and, where they are decoded fully, the label values fit ``labels``.

    Args:
        img_dir (str): The images.
        seg_dir (str): The label maps.
        img_suffix (str): The images' suffix, e.g. ``'.jpg'``.
        seg_suffix (str): The label maps' suffix, e.g. ``'.png'``.
        where (str): The config path of the dataset, for messages.
        labels (SegLabels, optional): What a label map may hold; None
            skips that check. Defaults to None.
        decode (str): ``preflight.decode``, see :data:`DECODE_MODES`.
            Defaults to ``'auto'``.

    Returns:
        int: The number of images.
    """
    for path, what in ((img_dir, 'img_path'), (seg_dir, 'seg_map_path')):
        if not osp.isdir(path):
            raise DatasetError(f'{where}: {what} directory {path} does not '
                               f'exist; check data_root/data_prefix')
    images = sorted(f for f in os.listdir(img_dir) if f.endswith(img_suffix))
    if not images:
        raise DatasetError(f'{where}: no *{img_suffix} images in {img_dir}')
    pairs = []
    for name in images:
        seg = osp.join(seg_dir, name[:-len(img_suffix)] + seg_suffix)
        if not osp.isfile(seg):
            raise DatasetError(f'{where}: label map {seg} for image '
                               f'{osp.join(img_dir, name)} does not exist')
        pairs.append((osp.join(img_dir, name), seg, name))
    full = decode_fully([p for pair in pairs for p in pair[:2]], decode)
    for image, seg, name in pairs:
        check_image_file(image, where, f'image {name}', full)
        check_image_file(seg, where, f'label map of {name}', full)
        if full and labels is not None:
            check_label_map(seg, labels, where)
    return len(images)


def preflight_options(cfg: Config) -> Dict:
    """``cfg.preflight`` with its defaults, validated.

    Returns:
        dict: ``max_drop_ratio`` (float) and ``decode`` (str).
    """
    options = cfg.get('preflight') or {}
    example = 'e.g. preflight=dict(max_drop_ratio=0.05, decode=\'full\')'
    if not isinstance(options, dict) or set(options) - {'max_drop_ratio',
                                                         'decode'}:
        raise ConfigError(
            f'preflight={options!r}: the options are max_drop_ratio and '
            f'decode, {example}')
    ratio = options.get('max_drop_ratio', MAX_DROP_RATIO)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or \
            not 0 <= ratio <= 1:
        raise ConfigError(
            f'preflight.max_drop_ratio={ratio!r}: must be a number from 0 '
            f'to 1 (the share of training annotations the framework may '
            f'drop), e.g. 0.05')
    decode = options.get('decode', 'auto')
    if decode not in DECODE_MODES:
        raise ConfigError(
            f'preflight.decode={decode!r}: choose one of '
            f'{list(DECODE_MODES)} (\'full\' decodes every image and label '
            f'map, \'header\' only their headers, \'auto\' decodes fully '
            f'when a dataset\'s files total at most '
            f'{FULL_DECODE_BYTES // 2**20} MiB)')
    return dict(max_drop_ratio=float(ratio), decode=decode)


def _default_classes(ds: dict,
                     scope: Optional[str]) -> Optional[Sequence[str]]:
    """The classes of the dataset's class (``METAINFO``), if it has any."""
    type_ = ds.get('type')
    if isinstance(type_, str):
        from mmengine.registry import DATASETS
        with DATASETS.switch_scope_and_registry(scope) as registry:
            type_ = registry.get(type_)
    classes = getattr(type_, 'METAINFO', {}).get('classes')
    return tuple(classes) if classes is not None else None


def _classes(ds: dict, scope: Optional[str]) -> Optional[Sequence[str]]:
    """The dataset's classes: its ``metainfo``, else its class's default
    (mmdet's ``CocoDataset`` defaults to the 80 COCO classes)."""
    meta = ds.get('metainfo') or {}
    if meta.get('classes') is not None:
        return tuple(meta['classes'])
    return _default_classes(ds, scope)


def seg_labels(ds: dict, scope: Optional[str]) -> Optional[SegLabels]:
    """What the label maps of the segmentation dataset ``ds`` may hold;
    None when its classes are unknown.

    Classes chosen from the class's own (mmseg maps the others to the
    ignore index) are counted in the file's numbering, the class's.
    """
    classes = _classes(ds, scope)
    full = _default_classes(ds, scope)
    if classes is None:
        return None
    if full is not None and set(classes) < set(full):
        classes = full
    return SegLabels(len(classes), ds.get('ignore_index', 255),
                     bool(ds.get('reduce_zero_label', False)))


def _loads_masks(ds: dict) -> bool:
    return any(
        isinstance(t, dict) and t.get('type') == 'LoadAnnotations'
        and t.get('with_mask', False) for t in ds.get('pipeline') or ())


def check_datasets(cfg: Config, splits: List[str]) -> None:
    """Validate the datasets of ``splits`` (e.g. ``['train_dataloader']``).

    Only layouts this module knows are checked (COCO json with
    ``ann_file``; mmseg folders with ``img_path``/``seg_map_path``); others
    are left to the framework. What would be dropped is counted for every
    COCO split and enforced (``preflight.max_drop_ratio``) for training.
    Images and label maps are decoded as ``preflight.decode`` says.
    """
    options = preflight_options(cfg)
    scope = cfg.get('default_scope')
    for split in splits:
        loader = cfg.get(split)
        if not loader:
            continue
        train = split == 'train_dataloader'
        for ds in leaf_datasets(loader['dataset']):
            root = ds.get('data_root')
            prefix = ds.get('data_prefix') or {}
            where = f'{split}.dataset'
            if ds.get('ann_file', '').endswith('.json'):
                img_dir = _join(root, prefix.get('img', ''))
                test_mode = ds.get('test_mode', False)
                check_coco(
                    _join(root, ds['ann_file']), img_dir, where,
                    classes=_classes(ds, scope),
                    filter_cfg=None if test_mode else ds.get('filter_cfg'),
                    max_drop_ratio=options['max_drop_ratio']
                    if train else None,
                    with_mask=_loads_masks(ds),
                    decode=options['decode'])
            elif 'seg_map_path' in prefix:
                check_segmentation(
                    _join(root, prefix.get('img_path', '')),
                    _join(root, prefix['seg_map_path']),
                    ds.get('img_suffix', '.jpg'),
                    ds.get('seg_map_suffix', '.png'), where,
                    labels=seg_labels(ds, scope), decode=options['decode'])
