"""Every config in configs/ builds and runs; schedules equal the papers'."""
import argparse
import copy
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import MODELS, init_default_scope  # noqa: E402

import mmsa  # noqa: E402,F401

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
PAPER_CONFIGS = sorted(
    p for p in CONFIGS.glob('*/*.py')
    if p.parent.name in ('faster_rcnn', 'retinanet', 'mask_rcnn', 'upernet'))
DET = [p for p in PAPER_CONFIGS if p.parent.name != 'upernet']
SEG = [p for p in PAPER_CONFIGS if p.parent.name == 'upernet']
VAN_DET = sorted((CONFIGS / 'van').glob('*_coco.py'))
VAN_SEG = sorted((CONFIGS / 'van').glob('upernet_*.py'))
# Stage widths of the VAN paper's variants, written out independently.
VAN_WIDTHS = {'b0': (32, 64, 160, 256), 'b1': (64, 128, 320, 512),
              'b2': (64, 128, 320, 512), 'b3': (64, 128, 320, 512)}
# Stochastic depth of the official downstream code (VAN-Segmentation).
VAN_DROP_PATH = {'b0': 0.1, 'b1': 0.1, 'b2': 0.1, 'b3': 0.3}


def _van_arch(path: Path) -> str:
    return path.name.split('_van-')[1][:2]
ALL_CONFIGS = sorted(p for p in CONFIGS.rglob('*.py')
                     if '_base_' not in p.parts)


def _ids(paths):
    return [p.name for p in paths]


def cpu_model_cfg(cfg: Config) -> dict:
    """The config's model with BN for SyncBN and no pretrained download."""

    def fix(node):
        if isinstance(node, dict):
            if node.get('type') == 'SyncBN':
                node['type'] = 'BN'
            for value in node.values():
                fix(value)
        elif isinstance(node, list):
            for value in node:
                fix(value)

    model = copy.deepcopy(cfg.model)
    fix(model)
    model.pop('pretrained', None)
    if 'backbone' in model:
        model['backbone'].pop('init_cfg', None)
        model['backbone'].pop('pretrained', None)
    return model


def build(path: Path):
    cfg = Config.fromfile(str(path))
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    torch.manual_seed(0)
    return cfg, MODELS.build(cpu_model_cfg(cfg)).eval()


def test_config_inventory():
    van = {p.name for p in VAN_DET + VAN_SEG}
    for arch in ('b0', 'b1', 'b2', 'b3'):
        assert f'retinanet_van-{arch}_fpn_1x_coco.py' in van
        assert f'mask-rcnn_van-{arch}_fpn_1x_coco.py' in van
        assert f'upernet_van-{arch}_4xb4-160k_ade20k-512x512.py' in van
    names = {p.name for p in PAPER_CONFIGS}
    for det in ('faster-rcnn', 'retinanet', 'mask-rcnn'):
        for depth in ('r50', 'r101'):
            for att in ('se', 'eca', 'sa', 'cbam', 'sge', 'gc'):
                assert f'{det}_{depth}-{att}_fpn_1x_coco.py' in names
        assert f'{det}_r50_fpn-sa_1x_coco.py' in names
    for depth in ('r50', 'r101'):
        for att in ('se', 'eca', 'sa', 'cbam'):
            for iters in ('80k', '160k'):
                assert (f'upernet_{depth}-{att}_4xb4-{iters}_ade20k-512x512'
                        '.py') in names
    assert len(PAPER_CONFIGS) == 3 * 13 + 16


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=_ids(ALL_CONFIGS))
def test_config_builds_and_runs_forward(path):
    cfg, model = build(path)
    if cfg.get('default_scope') == 'mmseg':
        inputs = torch.randn(1, 3, 128, 128)
        with torch.no_grad():
            logits = model(inputs, mode='tensor')
        assert logits.shape[:2] == (1, cfg.model.decode_head.num_classes)
        return
    from mmdet.structures import DetDataSample
    h, w = 128, 160
    sample = DetDataSample(metainfo=dict(
        img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
        batch_input_shape=(h, w), scale_factor=(1., 1.)))
    with torch.no_grad():
        result = model(torch.randn(1, 3, h, w), [sample], mode='predict')
    assert 'bboxes' in result[0].pred_instances
    if 'mask_head' in cfg.model.get('roi_head', {}):
        assert 'masks' in result[0].pred_instances


def _scheduler(cfg, type_):
    found = [s for s in cfg.param_scheduler if s['type'] == type_]
    assert len(found) == 1, cfg.param_scheduler
    return found[0]


def _transform(pipeline, type_):
    found = [t for t in pipeline if t['type'] == type_]
    assert len(found) == 1, pipeline
    return found[0]


@pytest.mark.parametrize('path', DET, ids=_ids(DET))
def test_detection_schedule_is_coco_1x(path):
    cfg = Config.fromfile(str(path))
    opt = cfg.optim_wrapper.optimizer
    lr = 0.01 if path.parent.name == 'retinanet' else 0.02
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == \
        ('SGD', lr, 0.9, 1e-4)
    assert cfg.train_cfg.type == 'EpochBasedTrainLoop'
    assert cfg.train_cfg.max_epochs == 12
    step = _scheduler(cfg, 'MultiStepLR')
    assert step.milestones == [8, 11] and step.gamma == 0.1
    warmup = _scheduler(cfg, 'LinearLR')
    assert warmup.end == 500 and not warmup.by_epoch
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs = 16
    assert cfg.auto_scale_lr.base_batch_size == 16
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert tuple(_transform(pipeline, 'Resize').scale) == (1333, 800)
    assert _transform(pipeline, 'RandomFlip').prob == 0.5
    test_pipeline = cfg.test_dataloader.dataset.pipeline
    assert tuple(_transform(test_pipeline, 'Resize').scale) == (1333, 800)
    backbone = cfg.model.backbone
    assert backbone.frozen_stages == 1 and backbone.norm_eval
    depth = 101 if '_r101' in path.name else 50
    assert backbone.depth == depth
    assert backbone.init_cfg.checkpoint == f'torchvision://resnet{depth}'


@pytest.mark.parametrize('path', SEG, ids=_ids(SEG))
def test_upernet_schedule_is_ade20k(path):
    cfg = Config.fromfile(str(path))
    iters = 160000 if '160k' in path.name else 80000
    assert tuple(cfg.crop_size) == (512, 512)
    assert tuple(cfg.model.data_preprocessor.size) == (512, 512)
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert cfg.train_cfg.max_iters == iters
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.weight_decay) == \
        ('SGD', 0.01, 0.9, 5e-4)
    poly = _scheduler(cfg, 'PolyLR')
    assert (poly.power, poly.eta_min, poly.end, poly.by_epoch) == \
        (0.9, 1e-4, iters, False)
    assert cfg.train_dataloader.batch_size == 4  # x 4 GPUs = 16
    assert cfg.model.decode_head.num_classes == 150
    assert cfg.model.backbone.type == 'AttnResNetV1c'
    assert cfg.model.backbone.norm_cfg.type == 'SyncBN'
    depth = 101 if '_r101' in path.name else 50
    assert cfg.model.backbone.depth == depth
    assert cfg.model.pretrained == f'open-mmlab://resnet{depth}_v1c'


@pytest.mark.parametrize('path', VAN_DET, ids=_ids(VAN_DET))
def test_van_detection_schedule_is_adamw_1x(path):
    cfg = Config.fromfile(str(path))
    opt = cfg.optim_wrapper.optimizer
    # _delete_ must have dropped SGD's momentum.
    assert dict(opt) == dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    assert cfg.train_cfg.max_epochs == 12
    step = _scheduler(cfg, 'MultiStepLR')
    assert step.milestones == [8, 11] and step.gamma == 0.1
    warmup = _scheduler(cfg, 'LinearLR')
    assert warmup.end == 1000 and not warmup.by_epoch
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr.base_batch_size == 16
    arch = _van_arch(path)
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.drop_path_rate) == \
        ('VAN', arch, VAN_DROP_PATH[arch])
    assert backbone.norm_cfg.type == 'SyncBN'
    assert backbone.init_cfg.checkpoint == f'pretrained/van_{arch}_mmsa.pth'
    assert tuple(cfg.model.neck.in_channels) == VAN_WIDTHS[arch]


@pytest.mark.parametrize('path', VAN_SEG, ids=_ids(VAN_SEG))
def test_van_upernet_schedule_is_the_official_one(path):
    cfg = Config.fromfile(str(path))
    opt = cfg.optim_wrapper.optimizer
    assert dict(opt) == dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys.norm.decay_mult == 0.
    warmup = _scheduler(cfg, 'LinearLR')
    assert (warmup.start_factor, warmup.end) == (1e-6, 1500)
    poly = _scheduler(cfg, 'PolyLR')
    assert (poly.power, poly.eta_min, poly.begin, poly.end) == \
        (1.0, 0.0, 1500, 160000)
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 4  # x 4 GPUs = 16
    arch = _van_arch(path)
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.drop_path_rate) == \
        ('VAN', arch, VAN_DROP_PATH[arch])
    assert tuple(cfg.model.decode_head.in_channels) == VAN_WIDTHS[arch]
    assert cfg.model.auxiliary_head.in_channels == VAN_WIDTHS[arch][2]


def test_attention_swaps_from_the_command_line():
    """``tools/train.py CFG --cfg-options model.backbone.attention.type=ECA``
    goes through the same DictAction and merge as here."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(
        ['--cfg-options', 'model.backbone.attention.type=ECA'])
    cfg = Config.fromfile(
        str(CONFIGS / 'faster_rcnn' / 'faster-rcnn_r50-sa_fpn_1x_coco.py'))
    cfg.merge_from_dict(args.cfg_options)
    init_default_scope('mmdet')
    backbone = MODELS.build(cpu_model_cfg(cfg)['backbone'])
    assert backbone.attention_summary() == {'eca': 16}
