"""The dataset preflight: what mmdet would drop, and data it cannot read."""
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.logging import MMLogger

from mmsa.datasets import CLASSES, SEG_CLASSES, generate
from mmsa.engine.preflight import DatasetError, check_datasets
from mmsa.errors import ConfigError


@pytest.fixture(scope='module')
def demo_coco(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('preflight')
    generate(str(root), num_train=8, num_val=4, seed=3, size=(128, 128))
    return root / 'coco'


@pytest.fixture
def coco(demo_coco, tmp_path) -> Path:
    """A private copy each test may damage."""
    return Path(shutil.copytree(demo_coco, tmp_path / 'coco'))


def config(root: Path, **train_dataset) -> Config:
    def dataset(split, **extra):
        return dict(type='CocoDataset', data_root=str(root),
                    metainfo=dict(classes=CLASSES),
                    ann_file=f'annotations/instances_{split}.json',
                    data_prefix=dict(img=f'{split}/'), **extra)

    train = dataset('train',
                    filter_cfg=dict(filter_empty_gt=True, min_size=4))
    train.update(train_dataset)
    return Config(dict(
        default_scope='mmdet',
        train_dataloader=dict(dataset=train),
        val_dataloader=dict(dataset=dataset('val', test_mode=True))))


def edit(root: Path, split: str, change) -> dict:
    path = root / 'annotations' / f'instances_{split}.json'
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return data


def run(cfg: Config):
    check_datasets(cfg, ['train_dataloader', 'val_dataloader'])


@pytest.fixture
def warnings(caplog):
    """The preflight's report lines (mmengine's logger does not
    propagate to the root logger, where caplog listens)."""
    logger = MMLogger.get_current_instance()
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.WARNING)
    yield caplog
    logger.removeHandler(caplog.handler)


def the_report(warnings) -> str:
    """The preflight's one report of what mmdet would drop."""
    report, = [r.getMessage() for r in warnings.records
               if 'mmdet would drop' in r.getMessage()]
    return report


def test_clean_demo_data_passes_without_a_report(coco, warnings):
    run(config(coco))
    assert not [r for r in warnings.records if 'mmdet would drop'
                in r.getMessage()]


def negate_widths(data, every=1):
    for ann in data['annotations'][::every]:
        ann['bbox'][2] = -ann['bbox'][2]


def test_training_set_that_loses_every_box_stops(coco):
    data = edit(coco, 'train', negate_widths)
    n = len(data['annotations'])
    with pytest.raises(DatasetError, match=(
            rf'train_dataloader.dataset: .*instances_train.json: of {n} '
            rf'annotations on 8 images, mmdet would drop {n} with width or '
            r'height < 1 px.*no usable box is left to train on')):
        run(config(coco))


def test_drops_over_the_threshold_stop_and_name_the_key(coco):
    data = edit(coco, 'train', lambda d: negate_widths(d, every=8))
    n, lost = len(data['annotations']), len(data['annotations'][::8])
    with pytest.raises(DatasetError, match=(
            rf'mmdet would drop {lost} with width or height < 1 px.* '
            r'more than preflight.max_drop_ratio=0.01;.*--cfg-options '
            r'preflight.max_drop_ratio=0\.\d\d')):
        run(config(coco))
    # the user's threshold lets the run through, with the report
    cfg = config(coco)
    cfg.preflight = dict(max_drop_ratio=0.5)
    run(cfg)
    assert lost / n <= 0.5


def test_unknown_category_ids_are_counted_and_named(coco, warnings):
    def relabel(data):
        data['annotations'][0]['category_id'] = 7

    data = edit(coco, 'train', relabel)
    cfg = config(coco)
    cfg.preflight = dict(max_drop_ratio=1)
    run(cfg)
    report = the_report(warnings)
    assert (f'of {len(data["annotations"])} annotations on 8 images, mmdet '
            f'would drop 1 with a category_id not among the classes '
            f"(category_id 7; classes: {CLASSES})") in report


def test_classes_missing_from_metainfo_default_to_coco_and_stop(coco):
    pytest.importorskip('mmdet')
    cfg = config(coco)
    del cfg.train_dataloader.dataset['metainfo']
    with pytest.raises(DatasetError, match=(
            r"category_id not among the classes \(category_id 1, 2, 3; "
            r"classes: \('person', 'bicycle'.*no usable box is left")):
        run(cfg)


def test_boxes_outside_and_images_without_boxes_are_reported(coco,
                                                             warnings):
    def damage(data):
        data['annotations'][0]['bbox'][:2] = [500, 500]
        first = data['images'][1]['id']
        data['annotations'] = [a for a in data['annotations']
                               if a['image_id'] != first]

    edit(coco, 'train', damage)
    cfg = config(coco)
    cfg.preflight = dict(max_drop_ratio=0.5)
    run(cfg)
    report = the_report(warnings)
    assert 'mmdet would drop 1 outside their image; 1 image(s) with no ' \
        'annotation of the classes' in report


def test_validation_drops_are_reported_not_enforced(coco, warnings):
    edit(coco, 'val', negate_widths)
    run(config(coco))
    assert any('val_dataloader.dataset' in r.getMessage()
               for r in warnings.records)


@pytest.mark.parametrize('damage,message', [
    (lambda d: d.update(images=[]),
     r'instances_train.json lists no images \("images" is empty\)'),
    (lambda d: d['images'][2].pop('height'),
     r'images\[2\] of .*instances_train.json \(train_00002.jpg\) has no '
     r'height; every image entry needs id, file_name, height, width'),
    (lambda d: d['annotations'][4].pop('area'),
     r'annotations\[4\] of .*instances_train.json has no area'),
    (lambda d: d['annotations'][1].update(bbox=[1, 2, 3]),
     r'annotations\[1\] of .* has bbox=\[1, 2, 3\]; a COCO box is '),
    (lambda d: d['annotations'][3].update(id=d['annotations'][2]['id']),
     r'annotations\[3\] of .* reuses the annotation id \d+; annotation '
     r'ids must be unique'),
    (lambda d: d['images'][6].update(id=d['images'][1]['id']),
     r'images\[6\] of .*instances_train.json \(train_00006.jpg\) reuses '
     r'the id 1 of train_00001.jpg; image ids must be unique'),
])
def test_malformed_entries_are_one_error_naming_the_entry(coco, damage,
                                                          message):
    edit(coco, 'train', damage)
    with pytest.raises(DatasetError, match=message):
        run(config(coco))


@pytest.mark.parametrize('content,reason', [
    (b'', r'the file is empty \(0 bytes\)'),
    (b'not a jpeg at all' * 8, 'not an image Pillow or OpenCV can decode'),
])
def test_unreadable_image_is_one_error_naming_file_and_entry(coco, content,
                                                             reason):
    (coco / 'train' / 'train_00005.jpg').write_bytes(content)
    with pytest.raises(DatasetError, match=(
            rf'image file {coco}/train/train_00005.jpg \(images\[5\] of '
            rf'.*instances_train.json\) cannot be read: {reason}')):
        run(config(coco))


@pytest.mark.parametrize('preflight', [dict(max_drop_ratio=2),
                                       dict(max_drop_ratio='5%'),
                                       dict(max_drop=0.1)])
def test_bad_preflight_option_is_explained(coco, preflight):
    cfg = config(coco)
    cfg.preflight = preflight
    with pytest.raises(ValueError, match='preflight'):
        run(cfg)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 2 // 3])


@pytest.mark.parametrize('decode,refused', [('auto', True), ('full', True),
                                            ('header', False)])
def test_image_cut_short_is_found_where_images_are_decoded(
        coco, decode, refused):
    truncate(coco / 'train' / 'train_00003.jpg')
    cfg = config(coco)
    cfg.preflight = dict(decode=decode)
    if not refused:  # its header is whole
        run(cfg)
        return
    with pytest.raises(DatasetError, match=(
            rf'image file {coco}/train/train_00003.jpg \(images\[3\] of '
            r'.*\) cannot be read: its image data is truncated or corrupt')):
        run(cfg)


def test_large_sets_are_decoded_fully_only_when_asked(coco, monkeypatch):
    import mmsa.engine.preflight as preflight
    truncate(coco / 'train' / 'train_00003.jpg')
    monkeypatch.setattr(preflight, 'FULL_DECODE_BYTES', 1000)
    run(config(coco))  # 'auto': too large to decode, headers only
    cfg = config(coco)
    cfg.preflight = dict(decode='full')
    with pytest.raises(DatasetError, match='truncated or corrupt'):
        run(cfg)


def test_unknown_decode_mode_is_explained(coco):
    cfg = config(coco)
    cfg.preflight = dict(decode='fast')
    with pytest.raises(ConfigError, match=(
            r"preflight.decode='fast': choose one of \['auto', 'header', "
            r"'full'\]")):
        run(cfg)


def test_polygons_under_three_points_are_counted_as_mmdet_drops_them(
        coco, warnings):
    def degenerate(data):
        data['annotations'][0]['segmentation'] = [[1, 1, 9, 9]]
        data['annotations'][1]['segmentation'].append([3, 3, 5, 5])

    edit(coco, 'train', degenerate)
    masks = [dict(type='LoadImageFromFile'),
             dict(type='LoadAnnotations', with_bbox=True, with_mask=True)]
    cfg = config(coco, pipeline=masks)
    cfg.preflight = dict(max_drop_ratio=0.5)
    run(cfg)
    report = the_report(warnings)
    assert 'mmdet would drop 1 whose polygons all have fewer than 3 ' \
        'points (masks); 2 polygon(s) with fewer than 3 points' in report
    warnings.clear()
    run(config(coco))  # boxes only: the polygons are not used
    assert not [r for r in warnings.records
                if 'mmdet would drop' in r.getMessage()]


def test_zero_area_boxes_are_counted(coco, warnings):
    edit(coco, 'train', lambda d: d['annotations'][2].update(area=0))
    cfg = config(coco)
    cfg.preflight = dict(max_drop_ratio=0.5)
    run(cfg)
    report = the_report(warnings)
    assert 'mmdet would drop 1 with width or height < 1 px (or area <= 0)' \
        in report


@pytest.fixture(scope='module')
def demo_ade(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('preflight_ade')
    generate(str(root), num_train=4, num_val=2, seed=3, size=(128, 128))
    return root / 'ade'


def seg_config(root: Path, **extra) -> Config:
    return Config(dict(
        default_scope='mmseg',
        train_dataloader=dict(dataset=dict(
            type='BaseSegDataset', data_root=str(root),
            metainfo=dict(classes=SEG_CLASSES), reduce_zero_label=True,
            img_suffix='.jpg', seg_map_suffix='.png',
            data_prefix=dict(img_path='images/training',
                             seg_map_path='annotations/training'),
            **extra))))


@pytest.mark.parametrize('value,refused', [(255, False),
                                           (len(SEG_CLASSES), False),
                                           (len(SEG_CLASSES) + 1, True),
                                           (200, True)])
def test_label_values_that_are_no_class_are_refused(demo_ade, tmp_path,
                                                    value, refused):
    """With reduce_zero_label, file values 1..n are the n classes, 0 and
    255 are ignored."""
    pytest.importorskip('mmseg')
    from PIL import Image
    root = Path(shutil.copytree(demo_ade, tmp_path / 'ade'))
    path = root / 'annotations' / 'training' / 'training_00001.png'
    labels = np.array(Image.open(path))
    labels[5:9, 5:9] = value
    Image.fromarray(labels).save(path)
    if not refused:
        check_datasets(seg_config(root), ['train_dataloader'])
        return
    with pytest.raises(DatasetError, match=(
            rf'train_dataloader.dataset: label map {path} holds value\(s\) '
            rf'{value}, which are neither a class \(0 to '
            rf'{len(SEG_CLASSES) - 1} in the file, 1 to num_classes once '
            r'reduce_zero_label subtracts 1\) nor ignore_index=255')):
        check_datasets(seg_config(root), ['train_dataloader'])
