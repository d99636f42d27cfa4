"""Render one image's detections and the SA attention maps of several stages.

    python tools/analysis_tools/visualize_attention.py CONFIG CHECKPOINT IMAGE
        [--blocks layer2.1 layer3.1] [--out-dir DIR] [--score-thr 0.3]

Writes ``detections.png``: the image enlarged to about 640 px, boxes and
labels with their scores, labels placed so they do not overlap; and
``attention.png``: for the last SA block of each stage (or ``--blocks``),

- top: the spatial-branch gate sigmoid(sweight * GN(x) + sbias), averaged
  over its channels, over the image. Each map is coloured from its own
  minimum to its maximum (the colour bar gives the gate values): a trained
  gate varies by a few hundredths around its mean, which a shared 0-1 scale
  would show as one flat colour;
- bottom: the channel-branch weights sigmoid(cweight * GAP(x) + cbias), one
  per channel of the channel halves, sorted, as bars on an axis that spans
  the block's own range.
"""
import argparse
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import cv2
import matplotlib
import numpy as np
import torch

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

import mmsa  # noqa: E402,F401
from mmsa.attention import ShuffleAttention  # noqa: E402
from mmsa.attention.shuffle_attention import sa_gates  # noqa: E402
from mmsa.engine import check_checkpoint  # noqa: E402
from mmsa.engine.cli import load_config, run_cli  # noqa: E402
from mmsa.engine.model_check import check_model  # noqa: E402
from mmsa.errors import ConfigError, DatasetError  # noqa: E402

DETECTION_SIZE = 640  # px, the longer side of detections.png
LABEL_SCALE = 0.5
Box = Tuple[int, int, int, int]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('image')
    parser.add_argument(
        '--blocks', nargs='+', default=None,
        help='backbone blocks holding an SA module, e.g. layer2.1 layer3.1 '
        '(default: the last SA block of each stage)')
    parser.add_argument('--out-dir', default='.')
    parser.add_argument('--score-thr', type=float, default=0.3)
    return parser.parse_args()


def find_sa(backbone: torch.nn.Module,
            blocks: Optional[Sequence[str]] = None
            ) -> List[Tuple[str, ShuffleAttention]]:
    """``(block name, SA module)`` of ``blocks``, or of the last SA block of
    each stage."""
    found = [(name.rsplit('.', 1)[0], m) for name, m in
             backbone.named_modules() if isinstance(m, ShuffleAttention)]
    if not found:
        raise ConfigError('the backbone has no SA module; use an SA config '
                          '(attention=dict(type=\'SA\'))')
    if blocks is None:
        last = {}
        for name, module in found:
            last[name.split('.')[0]] = (name, module)
        return list(last.values())
    by_name = dict(found)
    missing = [b for b in blocks if b not in by_name]
    if missing:
        raise ConfigError(
            f'--blocks {" ".join(missing)}: no SA module there; blocks with '
            f'SA: {", ".join(n for n, _ in found)}')
    return [(b, by_name[b]) for b in blocks]


def _overlap(a: Box, b: Box) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def place_label(box: Box, size: Tuple[int, int], taken: List[Box],
                shape: Tuple[int, int]) -> Box:
    """The label rectangle for ``box``: above it, inside its top, below it
    or inside its bottom, the first that stays in the image and overlaps no
    label placed before (else the one that overlaps least)."""
    x1, y1, x2, y2 = box
    w, h = size
    height, width = shape
    x = min(max(x1, 0), max(width - w, 0))
    candidates = [(x, y1 - h), (x, y1), (x, y2), (x, y2 - h)]
    best, best_cost = None, None
    for cx, cy in candidates:
        rect = (cx, cy, cx + w, cy + h)
        outside = cy < 0 or cy + h > height
        penalty = 10**9 if outside else 0
        cost = sum(_overlap(rect, t) for t in taken) + penalty
        if best is None or cost < best_cost:
            best, best_cost = rect, cost
        if cost == 0:
            break
    return best


def draw_detections(image: np.ndarray, result, classes: Sequence[str],
                    palette: Optional[Sequence], thr: float
                    ) -> Tuple[np.ndarray, int]:
    """The image enlarged to ``DETECTION_SIZE`` with boxes and labels."""
    scale = max(1, DETECTION_SIZE // max(image.shape[:2]))
    canvas = cv2.resize(image, None, fx=scale, fy=scale,
                        interpolation=cv2.INTER_CUBIC)
    inst = result.pred_instances
    keep = (inst.scores >= thr).nonzero().flatten().tolist()
    keep.sort(key=lambda i: -float(inst.scores[i]))  # best labels first
    taken: List[Box] = []
    for i in keep:
        x1, y1, x2, y2 = (int(round(v * scale))
                          for v in inst.bboxes[i].tolist())
        label = int(inst.labels[i])
        colour = tuple(int(c) for c in palette[label]) if palette else (
            255, 255, 255)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 2)
        text = f'{classes[label]} {float(inst.scores[i]):.2f}'
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX,
                                         LABEL_SCALE, 1)
        rect = place_label((x1, y1, x2, y2), (tw + 4, th + base + 4), taken,
                           canvas.shape[:2])
        taken.append(rect)
        cv2.rectangle(canvas, rect[:2], rect[2:], colour, -1)
        dark = sum(colour) < 380
        cv2.putText(canvas, text, (rect[0] + 2, rect[3] - base - 2),
                    cv2.FONT_HERSHEY_SIMPLEX, LABEL_SCALE,
                    (255, 255, 255) if dark else (0, 0, 0), 1, cv2.LINE_AA)
    return canvas, len(keep)


def gates(sa: ShuffleAttention, x: torch.Tensor
          ) -> Tuple[np.ndarray, np.ndarray]:
    """Channel gates (G*k,) and the spatial gate's channel mean (h, w)."""
    with torch.no_grad():
        gate_c, gate_s = sa_gates(x, sa)
    return gate_c[0].flatten().numpy(), gate_s[0].mean((0, 1)).numpy()


def draw_attention(image: np.ndarray, maps: List[tuple], title: str):
    """Spatial gates over the image (top) and sorted channel gates."""
    n = len(maps)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n, 6.4), squeeze=False,
                             gridspec_kw=dict(height_ratios=[3, 2]))
    h, w = image.shape[:2]
    for col, (block, groups, size, channel, spatial) in enumerate(maps):
        ax = axes[0, col]
        ax.imshow(image)
        up = cv2.resize(spatial, (w, h), interpolation=cv2.INTER_LINEAR)
        im = ax.imshow(up, cmap='inferno', alpha=0.55, vmin=float(up.min()),
                       vmax=float(up.max()))
        ax.set_title(f'{block}.sa spatial gate\n(G={groups}, '
                     f'{size[0]}x{size[1]} map)', fontsize=9)
        ax.axis('off')
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=7)
        bar.formatter.set_useOffset(False)
        bar.update_ticks()
        ax = axes[1, col]
        ordered = np.sort(channel)[::-1]
        # The axis spans this block's own range: trained gates differ by a
        # few hundredths, which bars from 0 would show as one flat block.
        spread = max(float(ordered[0] - ordered[-1]), 1e-3)
        bottom = max(float(ordered[-1]) - 0.1 * spread, 0.)
        ax.bar(np.arange(len(ordered)), ordered - bottom, bottom=bottom,
               width=1.0, color='tab:blue')
        ax.set_ylim(bottom, min(float(ordered[0]) + 0.1 * spread, 1.))
        ax.set_xlim(-0.5, len(ordered) - 0.5)
        ax.set_title(f'{block}.sa channel weights, sorted', fontsize=9)
        ax.set_xlabel(f'{len(ordered)} channels (channel halves)',
                      fontsize=8)
        ax.tick_params(labelsize=7)
    axes[1, 0].set_ylabel('sigmoid gate', fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.image):
        raise DatasetError(f'image {args.image} does not exist')
    cfg = load_config(args.config, None)
    # a refused, unreadable or foreign checkpoint before anything runs
    check_checkpoint(args.checkpoint, check_model(cfg), strict=True)
    from mmdet.apis import inference_detector, init_detector
    model = init_detector(cfg, args.checkpoint, device='cpu')
    blocks = find_sa(model.backbone, args.blocks)
    captured = {}
    handles = [
        sa.register_forward_hook(
            lambda m, inputs, out, name=name: captured.update(
                {name: inputs[0].detach()})) for name, sa in blocks
    ]
    image_bgr = cv2.imread(args.image)
    result = inference_detector(model, image_bgr)
    for handle in handles:
        handle.remove()

    os.makedirs(args.out_dir, exist_ok=True)
    image = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    meta = model.dataset_meta
    canvas, n = draw_detections(image, result, meta['classes'],
                                meta.get('palette'), args.score_thr)
    det_path = osp.join(args.out_dir, 'detections.png')
    cv2.imwrite(det_path, cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))

    maps = []
    for name, sa in blocks:
        x = captured[name]
        channel, spatial = gates(sa, x)
        maps.append((name, sa.groups, tuple(x.shape[-2:]), channel, spatial))
    fig = draw_attention(
        image, maps, f'{osp.basename(args.image)}: Shuffle Attention gates '
        f'of the last SA block of each stage ({n} detections with score '
        f'>= {args.score_thr})')
    att_path = osp.join(args.out_dir, 'attention.png')
    fig.savefig(att_path, dpi=110)
    plt.close(fig)
    print(f'wrote {det_path} ({n} detections) and {att_path}')


if __name__ == '__main__':
    run_cli(main)
