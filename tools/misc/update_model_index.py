"""Write ``configs/*/metafile.yml`` and ``model-index.yml`` from the configs.

    python tools/analysis_tools/get_flops.py configs/*/*.py \\
        --json docs/complexity.json      # params and FLOPs (slow: CPU)
    python tools/misc/update_model_index.py   # metafiles + model-index.yml
    python tools/misc/update_model_index.py --zoo   # README's zoo tables

The format is OpenMMLab's (mmdet/mmseg ``metafile.yml``, read by openmim
through the ``model-index`` package): one Collection per architecture
folder, one Model per config with its training data, architecture,
parameters and FLOPs. ``Results`` quote published numbers for the same
architecture and attention where the authors released one; they are
reference values, not results of these configs (COCO/ADE20K training does
not fit the machines mmsa is developed on), and each names its source.
"""
import argparse
import json
import os
import os.path as osp
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import yaml
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
COMPLEXITY = 'docs/complexity.json'

# folder -> (collection, paper title, paper URL, training data, results)
ARCHS = OrderedDict([
    ('faster_rcnn', ('Faster R-CNN', 'Faster R-CNN: Towards Real-Time '
                     'Object Detection with Region Proposal Networks',
                     'https://arxiv.org/abs/1506.01497')),
    ('retinanet', ('RetinaNet', 'Focal Loss for Dense Object Detection',
                   'https://arxiv.org/abs/1708.02002')),
    ('mask_rcnn', ('Mask R-CNN', 'Mask R-CNN',
                   'https://arxiv.org/abs/1703.06870')),
    ('upernet', ('UperNet', 'Unified Perceptual Parsing for Scene '
                 'Understanding', 'https://arxiv.org/abs/1807.10221')),
    ('van', ('VAN', 'Visual Attention Network',
             'https://arxiv.org/abs/2202.09741')),
    ('demo', ('mmsa demo', None, None)),
])

ATTENTION_PAPERS = {
    'SA': ('Shuffle Attention',
           'SA-Net: Shuffle Attention for Deep Convolutional Neural Networks',
           'https://arxiv.org/abs/2102.00240'),
    'SE': ('Squeeze-and-Excitation', 'Squeeze-and-Excitation Networks',
           'https://arxiv.org/abs/1709.01507'),
    'ECA': ('Efficient Channel Attention',
            'ECA-Net: Efficient Channel Attention for Deep Convolutional '
            'Neural Networks', 'https://arxiv.org/abs/1910.03151'),
    'CBAM': ('CBAM', 'CBAM: Convolutional Block Attention Module',
             'https://arxiv.org/abs/1807.06521'),
    'SGE': ('Spatial Group-wise Enhance',
            'Spatial Group-wise Enhance: Improving Semantic Feature Learning '
            'in Convolutional Networks', 'https://arxiv.org/abs/1905.09646'),
    'GC': ('Global Context Block',
           'GCNet: Non-local Networks Meet Squeeze-Excitation Networks and '
           'Beyond', 'https://arxiv.org/abs/1904.11492'),
    'LKA': ('Large Kernel Attention', 'Visual Attention Network',
            'https://arxiv.org/abs/2202.09741'),
}

MODEL_NAMES = {'FasterRCNN': 'Faster R-CNN', 'MaskRCNN': 'Mask R-CNN',
               'RetinaNet': 'RetinaNet'}

ECA_README = 'ECA-Net README (BangguWu/ECANet), reference'
VAN_README = ('VAN-Segmentation README, multi-scale test, reference')
# Published numbers for the same detector/segmentor, backbone and
# attention: config stem -> ({metric: value}, source).
REFERENCES: Dict[str, Tuple[Dict[str, float], str]] = {
    'faster-rcnn_r50-eca_fpn_1x_coco': ({'box AP': 38.0}, ECA_README),
    'faster-rcnn_r101-eca_fpn_1x_coco': ({'box AP': 40.3}, ECA_README),
    'retinanet_r50-eca_fpn_1x_coco': ({'box AP': 37.3}, ECA_README),
    'retinanet_r101-eca_fpn_1x_coco': ({'box AP': 39.1}, ECA_README),
    'mask-rcnn_r50-eca_fpn_1x_coco': (
        {'box AP': 39.0, 'mask AP': 35.6}, ECA_README),
    'mask-rcnn_r101-eca_fpn_1x_coco': (
        {'box AP': 41.3, 'mask AP': 37.4}, ECA_README),
    'upernet_van-b0_4xb4-160k_ade20k-512x512': ({'mIoU': 41.1}, VAN_README),
    'upernet_van-b1_4xb4-160k_ade20k-512x512': ({'mIoU': 44.9}, VAN_README),
    'upernet_van-b2_4xb4-160k_ade20k-512x512': ({'mIoU': 50.1}, VAN_README),
    'upernet_van-b3_4xb4-160k_ade20k-512x512': ({'mIoU': 50.6}, VAN_README),
}


def config_paths() -> List[str]:
    paths = []
    for folder in ARCHS:
        directory = osp.join(ROOT, 'configs', folder)
        paths += sorted(
            osp.join('configs', folder, name)
            for name in os.listdir(directory)
            if name.endswith('.py'))
    return paths


def _attention_of(cfg: Config) -> Tuple[Optional[object], str]:
    """The attention config and where it sits ('backbone'/'neck')."""
    backbone = cfg.model.get('backbone', {})
    if backbone.get('type') == 'VAN':
        return backbone.get('attention', 'LKA'), 'backbone'
    if backbone.get('attention') is not None:
        return backbone['attention'], 'backbone'
    return cfg.model.get('neck', {}).get('attention'), 'neck'


def _options(entry: dict) -> Dict[str, object]:
    return {k: v for k, v in entry.items() if k != 'type'}


def describe_attention(cfg: Config) -> Tuple[str, str]:
    """(type, short description), e.g. ('ECA', 'ECA (kernel_size=3,5,5,7)')."""
    attention, where = _attention_of(cfg)
    if isinstance(attention, str):
        attention = dict(type=attention)
    if isinstance(attention, (list, tuple)):
        types = {a['type'] for a in attention if a is not None}
        (type_, ) = types
        keys = sorted({k for a in attention if a for k in _options(a)})
        detail = ', '.join(
            f'{k}=' + ','.join(str(a.get(k)) for a in attention if a)
            for k in keys)
    else:
        type_ = attention['type']
        detail = ', '.join(f'{k}={v:.4g}' if isinstance(v, float) else
                           f'{k}={v}' for k, v in _options(attention).items())
    stages = cfg.model.get('backbone', {}).get('attention_stages')
    if stages is not None and where == 'backbone':
        on = [str(i + 1) for i, s in enumerate(stages) if s]
        detail = ', '.join(filter(None, [detail, 'stages ' + ','.join(on)]))
    if where == 'neck':
        detail = ', '.join(filter(None, [detail, 'on the FPN outputs']))
    return type_, f'{type_} ({detail})' if detail else type_


def describe_backbone(cfg: Config) -> str:
    """e.g. 'ResNet-50', 'ResNetV1c-101', 'ResNet-18 (half width)'."""
    backbone = cfg.model.backbone
    if backbone.type == 'VAN':
        return f'VAN-{str(backbone.arch).upper()}'
    name = {'AttnResNetV1c': 'ResNetV1c', 'AttnResNetV1d': 'ResNetV1d'}.get(
        backbone.type, 'ResNet')
    width = backbone.get('base_channels', 64)
    half = ' (half width)' if width == 32 else ''
    return f'{name}-{backbone.depth}{half}'


def training_data(cfg: Config) -> str:
    root = str(cfg.train_dataloader.dataset.get('data_root', ''))
    if 'demo' in root:
        return 'mmsa demo data (synthetic, bundled)'
    return 'ADE20K' if cfg.get('default_scope') == 'mmseg' else 'COCO'


def task_of(cfg: Config) -> List[Tuple[str, str]]:
    """[(task, metric)] of the config's evaluator."""
    if cfg.get('default_scope') == 'mmseg':
        return [('Semantic Segmentation', 'mIoU')]
    metric = cfg.val_evaluator.get('metric', 'bbox')
    metrics = [metric] if isinstance(metric, str) else list(metric)
    tasks = [('Object Detection', 'box AP')]
    if 'segm' in metrics:
        tasks.append(('Instance Segmentation', 'mask AP'))
    return tasks


def model_entry(path: str, collection: str, complexity: dict) -> dict:
    cfg = Config.fromfile(osp.join(ROOT, path))
    stem = osp.splitext(osp.basename(path))[0]
    type_, attention = describe_attention(cfg)
    backbone = describe_backbone(cfg)
    neck = cfg.model.get('neck', {})
    neck_type = neck.get('neck', neck).get('type') if neck else None
    head = cfg.model.get('decode_head', {}).get('type')
    model = {'UPerHead': 'UperNet'}.get(head) or MODEL_NAMES.get(
        cfg.model.type, cfg.model.type)
    arch = [backbone, ATTENTION_PAPERS.get(type_, (type_, ))[0]]
    arch += [t for t in (neck_type, model) if t]
    metadata = OrderedDict([('Training Data', training_data(cfg)),
                            ('Architecture', arch)])
    measured = complexity.get(path)
    if measured is None:
        raise KeyError(f'{path} is not in {COMPLEXITY}; run '
                       f'python tools/analysis_tools/get_flops.py {path} '
                       f'--json {COMPLEXITY}')
    metadata['Parameters'] = measured['params']
    metadata['FLOPs'] = measured['flops']
    metadata['Input Size'] = 'x'.join(str(s) for s in measured['shape'])
    loop = cfg.train_cfg
    if 'max_epochs' in loop:
        metadata['Epochs'] = loop['max_epochs']
    else:
        metadata['Iterations'] = loop['max_iters']
    entry = OrderedDict([('Name', stem), ('In Collection', collection),
                         ('Config', path), ('Metadata', metadata)])
    if type_ in ATTENTION_PAPERS:
        _, title, url = ATTENTION_PAPERS[type_]
        entry['Paper'] = OrderedDict([('Title', title), ('URL', url)])
    if stem in REFERENCES:
        values, source = REFERENCES[stem]
        dataset = metadata['Training Data']
        entry['Results'] = [
            OrderedDict([('Task', task), ('Dataset', dataset),
                         ('Metrics', {metric: values[metric]})])
            for task, metric in task_of(cfg) if metric in values
        ]
        entry['Results Source'] = source
    return dict(entry, _attention=attention, _type=type_)


def _plain(node):
    """OrderedDicts to dicts, so yaml writes plain mappings in order."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def collection_entry(folder: str) -> dict:
    name, title, url = ARCHS[folder]
    entry = OrderedDict([('Name', name)])
    if title:
        entry['Paper'] = OrderedDict([('Title', title), ('URL', url)])
    # relative to the metafile, where the model-index reader looks
    entry['README'] = 'README.md'
    return entry


def build_index(complexity: dict) -> Dict[str, dict]:
    """folder -> metafile content (with private ``_`` keys for --zoo)."""
    index = OrderedDict()
    for path in config_paths():
        folder = path.split('/')[1]
        collection = ARCHS[folder][0]
        meta = index.setdefault(folder, dict(
            Collections=[collection_entry(folder)], Models=[]))
        meta['Models'].append(model_entry(path, collection, complexity))
    return index


def write(index: Dict[str, dict]) -> List[str]:
    header = ('# Written by tools/misc/update_model_index.py from the '
              'configs and\n# docs/complexity.json (get_flops.py). Results: '
              'published reference\n# numbers (see Results Source), not '
              'results of these configs.\n')
    written = []
    for folder, meta in index.items():
        models = [{k: v for k, v in m.items() if not k.startswith('_')}
                  for m in meta['Models']]
        path = osp.join('configs', folder, 'metafile.yml')
        with open(osp.join(ROOT, path), 'w') as f:
            f.write(header)
            yaml.safe_dump(_plain(dict(Collections=meta['Collections'],
                                       Models=models)), f,
                           sort_keys=False, width=79)
        written.append(path)
    with open(osp.join(ROOT, 'model-index.yml'), 'w') as f:
        yaml.safe_dump(dict(Import=written), f, sort_keys=False)
    return written + ['model-index.yml']


def zoo_tables(index: Dict[str, dict]) -> str:
    """README's model zoo: one table per architecture."""
    out = []
    for folder, meta in index.items():
        if folder == 'demo':
            continue
        out.append(f'### {ARCHS[folder][0]}\n')
        out.append('| config | backbone | attention | params (M) | '
                   'FLOPs (G) | GPU train-step overhead | reference '
                   '(published, not ours) |')
        out.append('|---|---|---|---|---|---|---|')
        for model in meta['Models']:
            md = model['Metadata']
            reference = '—'
            if 'Results' in model:
                values = ', '.join(f'{k} {v}' for r in model['Results']
                                   for k, v in r['Metrics'].items())
                source = model['Results Source'].split(',')[0].split(' (')[0]
                reference = f'{values} ({source})'
            out.append(
                f'| [{model["Name"]}]({model["Config"]}) | '
                f'{md["Architecture"][0]} | {model["_attention"]} | '
                f'{md["Parameters"] / 1e6:.2f} | {md["FLOPs"] / 1e9:.1f} | '
                f'not measured | {reference} |')
        out.append('')
    return '\n'.join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--complexity', default=COMPLEXITY,
                        help='JSON written by get_flops.py --json')
    parser.add_argument('--zoo', action='store_true',
                        help='print the model zoo tables instead')
    args = parser.parse_args(argv)
    with open(osp.join(ROOT, args.complexity)) as f:
        complexity = json.load(f)['configs']
    index = build_index(complexity)
    if args.zoo:
        print(zoo_tables(index))
        return 0
    for path in write(index):
        print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
