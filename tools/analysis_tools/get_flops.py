"""Parameters and FLOPs of an mmsa config, or of the classification backbones.

    python tools/analysis_tools/get_flops.py CONFIG [--shape 800 1280]
    python tools/analysis_tools/get_flops.py CONFIG [CONFIG ...] --markdown
    python tools/analysis_tools/get_flops.py CONFIG [CONFIG ...] \
        --json docs/complexity.json
    python tools/analysis_tools/get_flops.py --backbone-table [--shape 224]

FLOPs are counted as in mmdet/mmseg's get_flops (mmengine's analyser, one
multiply-add = one FLOP, element-wise ops not counted), on a random image of
``--shape``, CPU, BN instead of SyncBN, no pretrained download.
``--backbone-table`` prints the ResNet-50/101 backbones with a 1000-class
head, the setting of the papers' tables (ResNet-50: 4.12 GFLOPs, 25.56M).
``--json`` adds each config's numbers to a JSON file (keyed by the config's
path as given; entries of other configs are kept), the input of
``tools/misc/update_model_index.py``, which writes the metafiles.
"""
import argparse
import copy
import json
import os
import platform
import sys
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, init_default_scope

import mmsa  # noqa: F401  (registration)

# (label, attention kwargs of AttnResNet) for --backbone-table
TABLE = [
    ('ResNet', {}),
    ('SE', dict(attention=dict(type='SE'))),
    ('ECA (k=3,5,5,7)', dict(attention=dict(type='ECA',
                                            kernel_size=(3, 5, 5, 7)))),
    ('SA (G=64)', dict(attention=dict(type='SA'))),
    ('CBAM', dict(attention=dict(type='CBAM'))),
    ('SGE (G=64)', dict(attention=dict(type='SGE'))),
    ('GC (r=16, c3-c5)',
     dict(attention=dict(type='GC'),
          attention_stages=(False, True, True, True))),
    ('BAM', dict(stage_attention=dict(type='BAM'))),
]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Get a model\'s FLOPs')
    parser.add_argument('config', nargs='*', help='config file path(s)')
    parser.add_argument('--markdown', action='store_true',
                        help='one markdown table row per config')
    parser.add_argument(
        '--shape', type=int, nargs='+', default=None,
        help='input size H [W]; default 800 1280 (detection), 512 512 '
        '(segmentation), 224 (--backbone-table)')
    parser.add_argument(
        '--json', metavar='FILE',
        help='add each config\'s params and FLOPs to FILE (JSON)')
    parser.add_argument('--backbone-table', action='store_true',
                        help='print the classification backbones table')
    parser.add_argument('--depths', type=int, nargs='+', default=[50, 101])
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, as in tools/train.py')
    args = parser.parse_args(argv)
    if not args.backbone_table and not args.config:
        parser.error('give a config, or --backbone-table')
    if len(args.config) > 1 and not (args.markdown or args.json):
        parser.error('several configs need --markdown or --json')
    return args


def _hw(shape: Optional[List[int]], default) -> tuple:
    if shape is None:
        return default
    return (shape[0], shape[0]) if len(shape) == 1 else tuple(shape[:2])


class Classifier(nn.Module):
    """A backbone + GAP + 1000-class fc, as the papers count them."""

    def __init__(self, backbone: nn.Module, channels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(channels, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x)[-1].mean((2, 3)))


class TensorMode(nn.Module):
    """Calls an mm model in ``tensor`` mode so it can be traced."""

    def __init__(self, model: nn.Module, samples) -> None:
        super().__init__()
        self.model = model
        self.samples = samples

    def forward(self, x: torch.Tensor):
        return self.model(x, self.samples, mode='tensor')


def _cpu_cfg(node):
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
        for value in node.values():
            _cpu_cfg(value)
    elif isinstance(node, list):
        for value in node:
            _cpu_cfg(value)
    return node


def measure(model: nn.Module, hw: tuple) -> dict:
    model.eval()
    with torch.no_grad():
        info = get_model_complexity_info(
            model, inputs=(torch.randn(1, 3, *hw), ), show_table=False,
            show_arch=False)
    return dict(flops=info['flops'], params=info['params'])


def _model_cfg(path: str, cfg_options=None) -> tuple:
    """(scope, the config's model for a CPU without downloads)."""
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope', 'mmdet')
    model_cfg = _cpu_cfg(copy.deepcopy(cfg.model))
    model_cfg.pop('pretrained', None)
    model_cfg.get('backbone', {}).pop('init_cfg', None)
    return scope, model_cfg


def config_complexity(path: str, shape=None, cfg_options=None) -> dict:
    scope, model_cfg = _model_cfg(path, cfg_options)
    init_default_scope(scope)
    model = MODELS.build(model_cfg)
    if scope == 'mmseg':
        hw = _hw(shape, (512, 512))
        samples = None
    else:
        from mmdet.structures import DetDataSample
        hw = _hw(shape, (800, 1280))
        samples = [DetDataSample(metainfo=dict(
            img_shape=hw, ori_shape=hw, pad_shape=hw, batch_input_shape=hw,
            scale_factor=(1., 1.)))]
    result = measure(TensorMode(model, samples), hw)
    result['shape'] = hw
    return result


def backbone_table(depths: Sequence[int], shape=None) -> str:
    from mmsa.models.backbones.det_resnet import AttnResNet
    hw = _hw(shape, (224, 224))
    lines = [
        f'| backbone | params (M) | FLOPs (G) at {hw[0]}x{hw[1]} | '
        'extra params | extra FLOPs (M) |', '|---|---|---|---|---|'
    ]
    for depth in depths:
        base = None
        for label, kwargs in TABLE:
            model = Classifier(
                AttnResNet(depth=depth, norm_eval=False, **kwargs), 2048)
            r = measure(model, hw)
            base = base or r
            lines.append(
                f'| R-{depth} {label} | {r["params"] / 1e6:.3f} | '
                f'{r["flops"] / 1e9:.3f} | '
                f'{r["params"] - base["params"]:+,} | '
                f'{(r["flops"] - base["flops"]) / 1e6:+.2f} |')
    return '\n'.join(lines)


def _machine() -> str:
    """The CPU and torch the numbers were counted with (FLOPs and params
    do not depend on them; recorded so a rerun can be compared)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f
                     if line.startswith('model name')]
        if names:
            cpu = f'{names[0]} ({len(names)} cores)'
    except OSError:
        pass
    return f'{cpu}; torch {torch.__version__}'


def write_json(path: str, configs: Sequence[str], shape, cfg_options
               ) -> None:
    """Measure ``configs`` and merge them into the JSON file ``path``,
    written after each config so an interrupted run keeps its results."""
    data = dict(configs={})
    if os.path.isfile(path):
        with open(path) as f:
            data = json.load(f)
    data['command'] = ('python tools/analysis_tools/get_flops.py CONFIG ... '
                       f'--json {path}')
    data['machine'] = _machine()
    # Configs that differ only in their schedule (UperNet 80k/160k) have
    # the same model: counted once.
    counted = {}
    for config in configs:
        key = repr(_model_cfg(config, cfg_options)) + repr(shape)
        if key not in counted:
            counted[key] = config_complexity(config, shape, cfg_options)
        r = counted[key]
        data['configs'][config] = dict(
            params=int(r['params']), flops=int(r['flops']),
            shape=list(r['shape']))
        with open(path, 'w') as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write('\n')
        print(f'{config}: {r["params"] / 1e6:.2f} M params, '
              f'{r["flops"] / 1e9:.1f} GFLOPs', flush=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.backbone_table:
        print(backbone_table(args.depths, args.shape))
        return
    if args.json:
        write_json(args.json, args.config, args.shape, args.cfg_options)
        return
    if args.markdown:
        print('| config | params (M) | FLOPs (G) | input |')
        print('|---|---|---|---|')
        for path in args.config:
            r = config_complexity(path, args.shape, args.cfg_options)
            print(f'| {os.path.basename(path)} | {r["params"] / 1e6:.2f} | '
                  f'{r["flops"] / 1e9:.1f} | {r["shape"][0]}x'
                  f'{r["shape"][1]} |', flush=True)
        return
    r = config_complexity(args.config[0], args.shape, args.cfg_options)
    split = '=' * 30
    print(f'{split}\nInput shape: (3, {r["shape"][0]}, {r["shape"][1]})\n'
          f'Flops: {r["flops"] / 1e9:.3f} G\n'
          f'Params: {r["params"] / 1e6:.3f} M\n{split}')


if __name__ == '__main__':
    sys.exit(main())
