"""Render one image's detections and the attention maps of an SA block.

    python tools/analysis_tools/visualize_attention.py CONFIG CHECKPOINT IMAGE
        [--block layer3.1] [--out-dir DIR] [--score-thr 0.3]

Writes ``detections.png`` (boxes, classes, scores) and ``attention.png``:
the spatial-branch gate sigmoid(sweight * GN(x) + sbias) averaged over its
channels and per group, and the channel-branch weights
sigmoid(cweight * GAP(x) + cbias) of every group, for the chosen block.
"""
import argparse
import os
import os.path as osp
import sys

import cv2
import matplotlib
import numpy as np
import torch

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

import mmsa  # noqa: E402,F401
from mmsa.attention import ShuffleAttention  # noqa: E402
from mmsa.ops.shuffle_attention import sa_gates  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('image')
    parser.add_argument(
        '--block', default=None,
        help='backbone block holding the SA module, e.g. layer3.1 '
        '(default: the last SA block of the third stage, or the last one)')
    parser.add_argument('--out-dir', default='.')
    parser.add_argument('--score-thr', type=float, default=0.3)
    return parser.parse_args()


def find_sa(backbone: torch.nn.Module, block: str):
    found = [(name.rsplit('.', 1)[0], m) for name, m in
             backbone.named_modules() if isinstance(m, ShuffleAttention)]
    if not found:
        raise ValueError('the backbone has no SA module; use an SA config')
    if block is None:
        stage3 = [f for f in found if f[0].startswith('layer3.')]
        return (stage3 or found)[-1]
    for name, module in found:
        if name == block:
            return name, module
    raise ValueError(f'--block {block} has no SA module; blocks with SA: '
                     f'{", ".join(n for n, _ in found)}')


def draw_detections(image: np.ndarray, result, classes, thr: float):
    canvas = image.copy()
    inst = result.pred_instances
    keep = inst.scores >= thr
    for box, label, score in zip(inst.bboxes[keep], inst.labels[keep],
                                 inst.scores[keep]):
        x1, y1, x2, y2 = (int(round(v)) for v in box.tolist())
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (255, 255, 255), 1)
        cv2.putText(canvas, f'{classes[label]} {score:.2f}', (x1, max(y1 - 2,
                                                                      8)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return canvas, int(keep.sum())


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.image):
        sys.exit(f'error: image {args.image} does not exist')
    from mmdet.apis import inference_detector, init_detector
    model = init_detector(args.config, args.checkpoint, device='cpu')
    block, sa = find_sa(model.backbone, args.block)
    captured = {}
    handle = sa.register_forward_hook(
        lambda m, inputs, out: captured.update(x=inputs[0].detach()))
    image_bgr = cv2.imread(args.image)
    result = inference_detector(model, image_bgr)
    handle.remove()
    with torch.no_grad():
        gate_c, gate_s = sa_gates(captured['x'], sa.groups, sa.cweight,
                                  sa.cbias, sa.sweight, sa.sbias,
                                  sa.gn.weight, sa.gn.bias, sa.gn.eps)
    gate_c, gate_s = gate_c[0].numpy(), gate_s[0].numpy()  # (G,k), (G,k,h,w)

    os.makedirs(args.out_dir, exist_ok=True)
    image = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    classes = model.dataset_meta['classes']
    boxes, n = draw_detections(image, result, classes, args.score_thr)
    det_path = osp.join(args.out_dir, 'detections.png')
    cv2.imwrite(det_path, cv2.cvtColor(boxes, cv2.COLOR_RGB2BGR))

    h, w = image.shape[:2]
    mean_map = cv2.resize(gate_s.mean((0, 1)), (w, h),
                          interpolation=cv2.INTER_LINEAR)
    groups = gate_s.shape[0]
    shown = min(groups, 4)
    fig, axes = plt.subplots(1, 3 + shown, figsize=(3 * (3 + shown), 3.2))
    axes[0].imshow(boxes)
    axes[0].set_title(f'detections (score >= {args.score_thr}): {n}')
    axes[1].imshow(image)
    im = axes[1].imshow(mean_map, cmap='jet', alpha=0.5)
    axes[1].set_title(f'{block}.sa spatial gate (mean)')
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    for g in range(shown):
        axes[2 + g].imshow(gate_s[g].mean(0), cmap='jet')
        axes[2 + g].set_title(f'spatial gate, group {g}')
    ax = axes[2 + shown]
    im = ax.imshow(gate_c.T, aspect='auto', cmap='viridis', vmin=0, vmax=1)
    ax.set(title='channel-branch weights', xlabel='group',
           ylabel='channel in half-group')
    fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in axes[:2 + shown]:
        ax.axis('off')
    fig.suptitle(f'{osp.basename(args.image)}: SA block {block} '
                 f'(G={groups}, input {captured["x"].shape[-2]}x'
                 f'{captured["x"].shape[-1]})')
    fig.tight_layout()
    att_path = osp.join(args.out_dir, 'attention.png')
    fig.savefig(att_path, dpi=100)
    plt.close(fig)
    print(f'wrote {det_path} ({n} detections) and {att_path}')


if __name__ == '__main__':
    main()
