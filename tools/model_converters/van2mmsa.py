"""Convert an official VAN ImageNet checkpoint for mmsa's ``VAN`` backbone.

    python tools/model_converters/van2mmsa.py van_base_828.pth.tar \\
        pretrained/van_b2_mmsa.pth

The source is one of the VAN-Classification checkpoints (van_b0..b3,
``van_{tiny,small,base,large}_*.pth.tar``); the output is
``{'state_dict': ..., 'meta': ...}``, the file a config names in
``backbone.init_cfg=dict(type='Pretrained', checkpoint=...)``.
"""
import argparse
import os.path as osp
import sys
from pathlib import Path
from typing import Optional, Sequence

import mmengine
import torch

from mmsa.converters.van import convert_van
from mmsa.errors import MMSAError
from mmsa.utils import safe_load


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert an official VAN checkpoint to mmsa keys')
    parser.add_argument('src', help='official checkpoint (.pth / .pth.tar)')
    parser.add_argument('dst',
                        help='output path, e.g. pretrained/'
                        'van_b2_mmsa.pth')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    try:
        # weights only; the ``args`` Namespace timm's training script
        # stores is among the plain values safe_load allows
        checkpoint = safe_load(args.src)
        state_dict = convert_van(checkpoint)
    except MMSAError as err:  # refused, unreadable, or no VAN
        sys.exit(f'error: {err}')
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    meta = dict(source=osp.basename(args.src),
                converter='tools/model_converters/van2mmsa.py',
                mmsa_type='VAN')
    torch.save({'state_dict': state_dict, 'meta': meta}, args.dst)
    mmengine.print_log(
        f'{len(state_dict)} tensors from {args.src} saved to {args.dst}',
        logger='current')


if __name__ == '__main__':
    main()
