"""The dataset preflight: what mmdet would drop, and data it cannot read."""
import json
import logging
import shutil
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.logging import MMLogger

from mmsa.datasets import CLASSES, generate
from mmsa.engine.preflight import DatasetError, check_datasets


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
    report, = [r.getMessage() for r in warnings.records
               if 'mmdet would drop' in r.getMessage()]
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
    report, = [r.getMessage() for r in warnings.records
               if 'mmdet would drop' in r.getMessage()]
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
