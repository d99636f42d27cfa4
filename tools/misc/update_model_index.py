"""Write ``configs/*/metafile.yml``, ``model-index.yml``, the model zoo
of ``docs/model_zoo.md`` and its summary in ``README.md`` from the configs.

    python tools/analysis_tools/get_flops.py configs/*/*.py \\
        --json docs/complexity.json      # params and FLOPs (slow: CPU)
    python tools/misc/update_model_index.py   # metafiles, index, zoo
    python tools/misc/update_model_index.py --zoo   # print the zoo tables
    python tools/misc/update_model_index.py \\
        --gpu-result work_dirs/gpu_check/gpu_check.json   # land a GPU check

It writes ``configs/*/metafile.yml`` and ``model-index.yml`` whole, and
the blocks between its markers in three files: ``docs/model_zoo.md`` (one
table per architecture, a row per config), ``README.md`` (a row per
architecture, linking to those tables) and ``docs/performance.md`` (the GPU
results). A column whose every cell is "not measured" or "—" is left out
of either zoo table.

The format is OpenMMLab's (mmdet/mmseg ``metafile.yml``, read by openmim
through the ``model-index`` package): one Collection per architecture
folder, one Model per config with its training data, architecture,
parameters and FLOPs. ``Results`` quote published numbers for the same
architecture and attention where the authors released one; they are
reference values, not results of these configs (COCO/ADE20K training does
not fit the machines mmsa is developed on), and each names its source.

The zoo's "GPU train-step overhead" comes from a ``tools/gpu_check.py``
result: ``--gpu-result FILE`` copies it (and its markdown) to
``docs/gpu_result.json`` (``.md``), which later runs read. A config gets a
value where the check measured its backbone and attention at its input
(the backbone alone, BN in training mode): the detectors' ResNet-50 at
2x3x800x1344 and UperNet's ResNetV1c-50 at 8x3x512x512, with SA, SE, ECA
(kernel sizes 3, 5, 5, 7), SGE or CBAM as the benchmark builds them; each
value names the GPU. Everything else says "not measured", and without a
result the column is left out.
"""
import argparse
import json
import os
import os.path as osp
import re
import shutil
import sys
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Tuple

import yaml
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
COMPLEXITY = 'docs/complexity.json'
GPU_RESULT = 'docs/gpu_result.json'
ZOO_FILE = 'docs/model_zoo.md'
README = 'README.md'
PERFORMANCE = 'docs/performance.md'
# the blocks this tool rewrites in ZOO_FILE, README and PERFORMANCE
ZOO_MARKERS = ('<!-- zoo: written by tools/misc/update_model_index.py -->',
               '<!-- /zoo -->')
SUMMARY_MARKERS = (
    '<!-- zoo-summary: written by tools/misc/update_model_index.py -->',
    '<!-- /zoo-summary -->')
GPU_MARKERS = ('<!-- gpu: written by tools/misc/update_model_index.py -->',
               '<!-- /gpu -->')
NOT_MEASURED = 'not measured'
NO_REFERENCE = '—'
#: Cells that hold no value: a zoo column of only these is left out.
EMPTY_CELLS = (NOT_MEASURED, NO_REFERENCE)
#: The benchmark's backbones (benchmark_attention.py --arch) by the zoo's
#: backbone name, and the input each is measured at by the training data.
GPU_BACKBONES = {('ResNet-50', 'COCO'): ('r50', 'det'),
                 ('ResNetV1c-50', 'ADE20K'): ('r50-v1c', 'seg')}
#: The attentions as the benchmark builds them (benchmark_attention.py's
#: ATTENTION), in describe_attention's words: a config's attention must
#: read exactly so.
GPU_ATTENTIONS = {'SA': 'SA', 'SE': 'SE', 'ECA': 'ECA (kernel_size=3,5,5,7)',
                  'SGE': 'SGE', 'CBAM': 'CBAM'}

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


def _value(value: object) -> str:
    """An option's value as the zoo writes it: '0.0625', and one value per
    stage as '3,5,5,7'."""
    if isinstance(value, (list, tuple)):
        return ','.join(_value(v) for v in value)
    return f'{value:.4g}' if isinstance(value, float) else str(value)


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
            f'{k}=' + ','.join(_value(a.get(k)) for a in attention if a)
            for k in keys)
    else:
        type_ = attention['type']
        detail = ', '.join(f'{k}={_value(v)}'
                           for k, v in _options(attention).items())
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
    return dict(entry, _attention=attention, _type=type_,
                _where=_attention_of(cfg)[1],
                _gpu_key=GPU_BACKBONES.get((backbone,
                                            metadata['Training Data'])))


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


def load_gpu_result(path: str) -> dict:
    """A ``tools/gpu_check.py`` result measured on a GPU; one clear error
    for anything else."""
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError) as err:
        raise SystemExit(f'--gpu-result {path}: cannot read a JSON result '
                         f'({err}); pass the gpu_check.json that '
                         'tools/gpu_check.py wrote') from None
    if not isinstance(result, dict) or result.get('tool') != 'gpu_check':
        raise SystemExit(f'--gpu-result {path}: not a tools/gpu_check.py '
                         'result (no "tool": "gpu_check"); pass its '
                         'gpu_check.json')
    if not result.get('cuda'):
        raise SystemExit(f'--gpu-result {path}: a dry run without CUDA '
                         f'(torch {result["machine"]["torch"]}): it holds '
                         'no GPU figure to land')
    return result


def gpu_overheads(result: dict) -> Dict[tuple, dict]:
    """(arch, input, attention) -> the median train-step overhead of the
    mmsa variant over the plain backbone by precision, with the GPU and
    the input size, from every benchmark part of ``result``."""
    found: Dict[tuple, dict] = {}
    for part in result['benchmark'].values():
        for row in part.get('backbones', []):
            name, _, variant = row['model'].partition(' ')
            if variant != 'mmsa' or 'train_overhead' not in row:
                continue
            entry = found.setdefault(
                (row.get('arch', 'r50'), row['input'], name),
                dict(gpu=result['machine']['gpu'],
                     size='x'.join(map(str, row['size']))))
            entry[row['precision']] = row['train_overhead'][1]
    return found


def apply_gpu_result(index: Dict[str, dict], result: Optional[dict],
                     source: str = GPU_RESULT) -> int:
    """Adds ``GPU Train-Step Overhead`` to the metadata (and the zoo's
    cell, ``_gpu``) of every model whose backbone and attention ``result``
    measured; returns how many."""
    overheads = gpu_overheads(result) if result else {}
    filled = 0
    for meta in index.values():
        for model in meta['Models']:
            model['_gpu'] = NOT_MEASURED
            key = model['_gpu_key']
            if key is None or GPU_ATTENTIONS.get(
                    model['_type']) != model['_attention']:
                continue
            found = overheads.get(key + (model['_type'], ))
            if found is None or not {'fp32', 'amp'} & set(found):
                continue
            values = OrderedDict(
                (label, f'{found[p]:+.1%}')
                for p, label in (('fp32', 'fp32'), ('amp', 'fp16 autocast'))
                if p in found)
            model['Metadata']['GPU Train-Step Overhead'] = OrderedDict(
                [*values.items(), ('GPU', found['gpu']),
                 ('Measured', f'{model["Metadata"]["Architecture"][0]} '
                  f'alone, BN in training mode, input {found["size"]}, '
                  'over the plain backbone (tools/gpu_check.py)'),
                 ('Source', source)])
            model['_gpu'] = (', '.join(f'{v} {k}' for k, v in values.items())
                             + f' ({found["gpu"]})')
            filled += 1
    return filled


def replace_block(path: str, markers: Tuple[str, str], text: str) -> bool:
    """Replaces what lies between ``markers`` in ``path`` with ``text``;
    False where the file has no such block."""
    with open(path) as f:
        content = f.read()
    start, end = markers
    if start not in content or end not in content:
        return False
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(path, 'w') as f:
        f.write(f'{head}{start}\n\n{text.strip()}\n\n{end}{tail}')
    return True


def gpu_section(result: Optional[dict]) -> str:
    """docs/performance.md's GPU results: 'not measured', or the landed
    check's headline, machine, command and train-step overheads."""
    if result is None:
        return ('**Not measured**: no GPU has run mmsa\'s kernels yet. The '
                'check\n([gpu_check.md](gpu_check.md)) writes what lands '
                'here.')
    machine = result['machine']
    tests = result.get('tests') or {}
    lines = [result['headline'], '', '| | |', '|---|---|',
             f'| GPU | {machine["gpu"]} (driver '
             f'{machine.get("driver", "-")}) |',
             f'| torch, CUDA, triton | {machine["torch"]}, CUDA '
             f'{machine.get("cuda_version")}, triton {machine["triton"]} |',
             f'| date | {result["date"]} |',
             f'| command | `{result["command"]}` |']
    if tests:
        lines.append(f'| CUDA tests | {tests["passed"]} passed, '
                     f'{tests["failed"] + tests["errors"]} failed, '
                     f'{tests["skipped"]} skipped |')
    overheads = gpu_overheads(result)
    combos = sorted({k[:2] for k in overheads}, key=str)
    if combos:
        lines += ['', 'Train-step overhead of the mmsa attention over the '
                  'plain backbone (median of the rounds; fp32 / fp16 '
                  'autocast):', '',
                  '| attention | ' + ' | '.join(
                      f'{arch} {inp} {_sizes(overheads, arch, inp)}'
                      for arch, inp in combos) + ' |',
                  '|---' * (len(combos) + 1) + '|']
        for name in GPU_ATTENTIONS:
            cells = []
            for arch, inp in combos:
                found = overheads.get((arch, inp, name), {})
                cells.append(' / '.join(f'{found[p]:+.1%}' for p in
                                        ('fp32', 'amp') if p in found)
                             or '-')
            lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    lines += ['', 'The whole run: [gpu_result.md](gpu_result.md).']
    return '\n'.join(lines)


def _sizes(overheads: Dict[tuple, dict], arch: str, inp: str) -> str:
    sizes = {v['size'] for k, v in overheads.items() if k[:2] == (arch, inp)}
    return ', '.join(sorted(sizes))


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


def markdown_table(header: List[str], rows: List[List[str]]) -> str:
    """A markdown table of ``rows`` under ``header``, without the columns
    whose every cell is empty ('not measured' or '—', ``EMPTY_CELLS``):
    the one rule of both zoo tables."""
    keep = [i for i in range(len(header))
            if any(row[i] not in EMPTY_CELLS for row in rows)]
    lines = ['| ' + ' | '.join(header[i] for i in keep) + ' |',
             '|---' * len(keep) + '|']
    lines += ['| ' + ' | '.join(row[i] for i in keep) + ' |' for row in rows]
    return '\n'.join(lines)


def _source(model: dict) -> str:
    """The short name of a model's published reference, e.g. 'ECA-Net
    README'."""
    return model['Results Source'].split(',')[0].split(' (')[0]


def zoo_tables(index: Dict[str, dict]) -> str:
    """docs/model_zoo.md's tables: one per architecture, a row per config,
    linked relative to docs/."""
    out = []
    for folder, meta in index.items():
        if folder == 'demo':
            continue
        rows = []
        for model in meta['Models']:
            md = model['Metadata']
            reference = NO_REFERENCE
            if 'Results' in model:
                values = ', '.join(f'{k} {v}' for r in model['Results']
                                   for k, v in r['Metrics'].items())
                reference = f'{values} ({_source(model)})'
            rows.append([
                f'[{model["Name"]}](../{model["Config"]})',
                md['Architecture'][0], model['_attention'],
                f'{md["Parameters"] / 1e6:.2f}', f'{md["FLOPs"] / 1e9:.1f}',
                model.get('_gpu', NOT_MEASURED), reference
            ])
        out += [f'### {ARCHS[folder][0]}', '',
                markdown_table([
                    'config', 'backbone', 'attention', 'params (M)',
                    'FLOPs (G)', 'GPU train-step overhead',
                    'reference (published, not ours)'
                ], rows), '']
    return '\n'.join(out)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading: 'Faster R-CNN' ->
    'faster-r-cnn'."""
    return re.sub(r'[^\w\- ]', '', heading.lower()).replace(' ', '-')


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


def join_names(names: Iterable[str]) -> str:
    """Names in natural order with their shared prefix written once:
    'ResNet-50/101', 'VAN-B0/B1/B2/B3'."""
    names = sorted(set(names), key=_natural)
    prefixes = {n.rpartition('-')[0] for n in names}
    if len(prefixes) == 1 and '' not in prefixes:
        (prefix, ) = prefixes
        return f'{prefix}-' + '/'.join(n[len(prefix) + 1:] for n in names)
    return ', '.join(names)


def _summary_references(models: List[dict]) -> str:
    """The published references of one architecture, grouped: 'ECA
    ResNet-50/101: box AP (ECA-Net README)'. A group names the attention
    where the architecture has several, the head where it has several."""
    types = {m['_type'] for m in models}
    heads = {m['Metadata']['Architecture'][-1] for m in models}
    groups: Dict[tuple, List[str]] = OrderedDict()
    for model in models:
        if 'Results' not in model:
            continue
        metrics = tuple(k for r in model['Results'] for k in r['Metrics'])
        label = ' '.join(
            [model['Metadata']['Architecture'][-1]] * (len(heads) > 1) +
            [model['_type']] * (len(types) > 1))
        key = (label, metrics, _source(model))
        groups.setdefault(key, []).append(model['Metadata']['Architecture'][0])
    return '; '.join(
        ' '.join(filter(None, [label, join_names(backbones)])) +
        f': {", ".join(metrics)} ({source})'
        for (label, metrics, source), backbones in groups.items()
    ) or NO_REFERENCE


def zoo_summary(index: Dict[str, dict]) -> str:
    """README's model zoo: a row per architecture (its backbones,
    attentions, configs, published references), linking to its table in
    docs/model_zoo.md."""
    order = list(ATTENTION_PAPERS)
    rows = []
    for folder, meta in index.items():
        if folder == 'demo':
            continue
        models = meta['Models']
        name = ARCHS[folder][0]
        heads = sorted({m['Metadata']['Architecture'][-1] for m in models})
        arch = f'[{name}]({ZOO_FILE}#{_anchor(name)})'
        if heads != [name]:
            arch += f' ({", ".join(heads)})'
        types = sorted({m['_type'] for m in models if m['_where'] != 'neck'},
                       key=lambda t: (order + [t]).index(t))
        necks = sorted({m['_type'] for m in models if m['_where'] == 'neck'})
        attentions = ', '.join(types) + ''.join(
            f'; {t} on the FPN outputs' for t in necks)
        measured = [m['Metadata']['GPU Train-Step Overhead']['GPU']
                    for m in models
                    if 'GPU Train-Step Overhead' in m['Metadata']]
        gpu = (f'{len(measured)} of {len(models)} configs '
               f'({", ".join(sorted(set(measured)))})'
               if measured else NOT_MEASURED)
        rows.append([
            arch,
            join_names(m['Metadata']['Architecture'][0] for m in models),
            attentions,
            str(len(models)), gpu,
            _summary_references(models)
        ])
    return markdown_table([
        'architecture', 'backbones', 'attentions', 'configs',
        'GPU train-step overhead', 'reference (published, not ours)'
    ], rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--complexity', default=COMPLEXITY,
                        help='JSON written by get_flops.py --json')
    parser.add_argument('--zoo', action='store_true',
                        help=f'print the full model zoo tables (those of '
                        f'{ZOO_FILE}, linked relative to docs/) and write '
                        'nothing')
    parser.add_argument('--gpu-result', metavar='FILE.json',
                        help='land a tools/gpu_check.py result: copied '
                        f'(with its .md) to {GPU_RESULT}, which every run '
                        'reads')
    args = parser.parse_args(argv)
    with open(osp.join(ROOT, args.complexity)) as f:
        complexity = json.load(f)['configs']
    landed = osp.join(ROOT, GPU_RESULT)
    result = None
    if args.gpu_result:
        result = load_gpu_result(args.gpu_result)
        if osp.abspath(args.gpu_result) != landed:
            shutil.copy(args.gpu_result, landed)
            md = osp.splitext(args.gpu_result)[0] + '.md'
            if osp.exists(md):
                shutil.copy(md, osp.splitext(landed)[0] + '.md')
    elif osp.exists(landed):
        result = load_gpu_result(landed)
    index = build_index(complexity)
    filled = apply_gpu_result(index, result)
    if args.zoo:
        print(zoo_tables(index))
        return 0
    for path in write(index):
        print(f'wrote {path}')
    for path, markers, text in (
            (ZOO_FILE, ZOO_MARKERS, zoo_tables(index)),
            (README, SUMMARY_MARKERS, zoo_summary(index)),
            (PERFORMANCE, GPU_MARKERS, gpu_section(result))):
        if replace_block(osp.join(ROOT, path), markers, text):
            print(f'wrote {path} (its block {markers[0]})')
        else:
            print(f'{path}: no block {markers[0]} ... {markers[1]}; not '
                  'written')
    if result:
        print(f'GPU train-step overhead of {filled} configs from '
              f'{GPU_RESULT} ({result["machine"]["gpu"]})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
