"""`make demo`: build the SA Faster R-CNN config and run it on an image.

Builds ``configs/faster_rcnn/faster-rcnn_r50-sa_fpn_1x_coco.py`` exactly as
``tools/train.py`` would (no pretrained download: the backbone starts from
its initialisation), compares it with the plain mmdet Faster R-CNN, and
runs one inference on a synthetic 800x1333 image on the CPU. No training
yet, so the boxes are those of an untrained detector.
"""
import argparse
import os.path as osp
import time

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmsa

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'faster_rcnn',
                          'faster-rcnn_r50-sa_fpn_1x_coco.py')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='?', default=DEFAULT_CONFIG)
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(cfg: Config, backbone_type: str = None) -> torch.nn.Module:
    from mmdet.registry import MODELS
    model_cfg = cfg.model.copy()
    backbone = dict(model_cfg.backbone, init_cfg=None)
    if backbone_type is not None:  # the plain mmdet backbone, same settings
        backbone = dict(type=backbone_type, depth=backbone['depth'],
                        num_stages=4, out_indices=(0, 1, 2, 3),
                        frozen_stages=1, norm_eval=True, style='pytorch',
                        norm_cfg=backbone['norm_cfg'])
    model_cfg.backbone = backbone
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model.eval()


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    init_default_scope('mmdet')
    cfg = Config.fromfile(args.config)
    print(f'mmsa {mmsa.__version__}: {osp.relpath(args.config, ROOT)}')
    model = build(cfg)
    plain = build(cfg, backbone_type='ResNet')
    extra = count(model) - count(plain)
    print(f'  attention modules: {model.backbone.attention_summary()}')
    print(f'  parameters: {count(model):,} ({extra:+,} over plain '
          f'Faster R-CNN R-50 FPN)')

    from mmdet.apis import inference_detector
    rng = np.random.default_rng(args.seed)
    image = rng.integers(0, 256, (800, 1333, 3), dtype=np.uint8)
    model.cfg = cfg
    for name, net in (('SA', model), ('plain', plain)):
        net.cfg = cfg
        start = time.perf_counter()
        with torch.no_grad():
            result = inference_detector(net, image)
        seconds = time.perf_counter() - start
        print(f'  {name:5s} inference on 800x1333: {seconds:.2f} s, '
              f'{len(result.pred_instances)} boxes (untrained weights)')
    print('Training and COCO evaluation on bundled data arrive with the '
          'end-to-end issue; see README.')


if __name__ == '__main__':
    main()
