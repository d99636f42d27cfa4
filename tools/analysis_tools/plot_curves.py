"""Draw a work dir's training curves (losses, lr, val mAP/mIoU) to a PNG.

    python tools/analysis_tools/plot_curves.py WORK_DIR [--out curves.png]

Reads every ``WORK_DIR/<timestamp>/vis_data/scalars.json`` that mmengine's
logger wrote (a resumed run adds a timestamp dir; steps continue), so one
picture covers the whole run.
"""
import argparse
import glob
import json
import os.path as osp
import sys
from collections import defaultdict
from typing import Dict, List, Tuple

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

VAL_KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'mIoU',
            'aAcc', 'mAcc')

Series = Dict[str, List[Tuple[float, float]]]


def read_scalars(work_dir: str) -> Tuple[Series, Series]:
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    if not files:
        raise FileNotFoundError(
            f'no */vis_data/scalars.json under {work_dir}: is it the '
            f'work dir of a tools/train.py run?')
    train: Series = defaultdict(list)
    val: Series = defaultdict(list)
    for path in files:
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                step = row.get('step', row.get('iter'))
                if any(k in row for k in VAL_KEYS):
                    for k in VAL_KEYS:
                        if k in row:
                            val[k].append((step, row[k]))
                    continue
                for k, v in row.items():
                    if (k.startswith('loss') or k == 'lr') and \
                            isinstance(v, (int, float)):
                        train[k].append((row.get('iter', step), v))
    for series in (train, val):
        for k in series:  # resumed runs can log a step twice
            series[k] = sorted(dict(series[k]).items())
    return train, val


def plot(work_dir: str, out: str) -> str:
    train, val = read_scalars(work_dir)
    losses = [k for k in train if k.startswith('loss')]
    fig, axes = plt.subplots(1, 3 if val else 2, figsize=(15 if val else 10,
                                                          4))
    for k in losses:
        xs, ys = zip(*train[k])
        axes[0].plot(xs, ys, label=k, linewidth=2 if k == 'loss' else 1)
    axes[0].set(title='training losses', xlabel='iteration', yscale='log')
    axes[0].legend(fontsize=7)
    if 'lr' in train:
        xs, ys = zip(*train['lr'])
        axes[1].plot(xs, ys)
    axes[1].set(title='learning rate', xlabel='iteration')
    if val:
        for k, points in val.items():
            xs, ys = zip(*points)
            axes[2].plot(xs, ys, 'o-', label=k)
        axes[2].set(title='validation', xlabel='epoch / iteration',
                    ylim=(0, None))
        axes[2].legend(fontsize=7)
    fig.suptitle(osp.basename(osp.abspath(work_dir)))
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir')
    parser.add_argument('--out', help='PNG path (default WORK_DIR/curves.png)')
    args = parser.parse_args()
    try:
        out = plot(args.work_dir, args.out or osp.join(args.work_dir,
                                                        'curves.png'))
    except FileNotFoundError as err:
        sys.exit(f'error: {err}')
    print(f'curves written to {out}')


if __name__ == '__main__':
    main()
