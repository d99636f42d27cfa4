"""Convert an ImageNet checkpoint of a (attention) ResNet for mmsa.

    python tools/model_converters/convert_weights.py --from sa-net \\
        sa_resnet50.pth.tar sa_resnet50_mmsa.pth

Sources: official SA-Net and ECA-Net releases, SE-ResNet in timm's or
mmpretrain's naming, torchvision ResNets. The classifier is dropped, every
tensor is checked against the backbone the checkpoint describes, and the
result is an mmengine checkpoint for
``init_cfg=dict(type='Pretrained', checkpoint=DST)`` on the backbone.
Files are read with ``torch.load(weights_only=True)``. See
docs/pretrained.md.
"""
import argparse
import os
import os.path as osp
import sys

import torch

from mmsa.converters import SOURCES, convert
from mmsa.errors import MMSAError
from mmsa.utils import safe_load


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert an ImageNet ResNet checkpoint into an mmsa '
        'backbone checkpoint')
    parser.add_argument('--from',
                        dest='source',
                        required=True,
                        choices=list(SOURCES),
                        help='naming of SRC')
    parser.add_argument('src', metavar='SRC', help='checkpoint to convert')
    parser.add_argument('dst', metavar='DST', help='output file')
    parser.add_argument('--depth',
                        type=int,
                        help='expected ResNet depth (checked; read '
                        'from SRC by default)')
    parser.add_argument(
        '--target',
        choices=('resnet', 'v1c'),
        default='resnet',
        help="'resnet': 7x7 stem (AttnResNet, AttnResNetSeg); 'v1c': mmseg's "
        'deep stem, which 7x7-stem weights cannot fill (explains why)')
    parser.add_argument(
        '--attention',
        help='attention type of the target for a plain ResNet '
        "source, e.g. 'SA' (reported as kept at paper initialisation)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        checkpoint = safe_load(args.src)
        state_dict, meta, report = convert(args.source,
                                           checkpoint,
                                           depth=args.depth,
                                           target=args.target,
                                           attention=args.attention)
    except MMSAError as err:  # refused, unreadable, or not that source
        sys.exit(f'error: {args.src}: {err}')
    dst_dir = osp.dirname(osp.abspath(args.dst))
    os.makedirs(dst_dir, exist_ok=True)
    torch.save(dict(state_dict=state_dict, meta=meta), args.dst)
    print(report.format())
    backbone = ', '.join(f'{k}={v!r}' for k, v in meta['backbone'].items())
    print(f'saved {args.dst}; use it as\n'
          f'  backbone=dict({backbone},\n'
          f"                init_cfg=dict(type='Pretrained', "
          f"checkpoint='{args.dst}'))")


if __name__ == '__main__':
    main()
