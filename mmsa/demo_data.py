"""Deterministic synthetic data in COCO and ADE20K layouts for the demos.

Scenes of circles, triangles and rectangles on textured backgrounds. The
model has to learn shape, not colour: every object gets a random colour,
and the clutter (lines, blobs, noise) uses the same palette. Sizes span
small to large, objects may overlap (bounded IoU) and smaller objects are
drawn on top, so the instance masks are amodal (COCO style) while the
semantic maps hold the visible class of each pixel.

Layouts, under ``root``:

    coco/train/*.jpg, coco/val/*.jpg
    coco/annotations/instances_{train,val}.json   boxes + polygon masks
    ade/images/{training,validation}/*.jpg
    ade/annotations/{training,validation}/*.png   0 = ignore, 1.. = classes

The ADE20K maps follow its convention (0 means "other", removed with
``reduce_zero_label=True``): 1 is the background surface, 2-4 the shapes,
and anti-aliased object borders are 0 (ignored).
"""
import json
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

CLASSES = ('circle', 'triangle', 'rectangle')
SEG_CLASSES = ('background', ) + CLASSES
PALETTE = [(220, 20, 60), (0, 128, 255), (255, 200, 0)]
SEG_PALETTE = [(60, 60, 60)] + PALETTE
VERSION = 2  # bump when the generator's output changes
MIN_CONTRAST = 60  # mean |object - background| per channel, 0-255


def _polygon(kind: str, cx: float, cy: float, size: float,
             rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    if kind == 'circle':
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        r = np.full_like(t, size / 2)
    elif kind == 'triangle':
        t = angle + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        t += rng.uniform(-0.25, 0.25, 3)
        r = np.full(3, size / 2)
    else:  # rectangle with aspect 0.5-2, rotated
        aspect = np.exp(rng.uniform(np.log(0.5), np.log(2)))
        w, h = size / np.sqrt(aspect), size * np.sqrt(aspect)
        w, h = min(w, size * 1.2), min(h, size * 1.2)
        corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
        rot = np.array([[np.cos(angle), -np.sin(angle)],
                        [np.sin(angle), np.cos(angle)]])
        pts = corners @ rot.T
        return pts + [cx, cy]
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0., x2 - x1) * max(0., y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / max(union - inter, 1e-6)


def _background(size: Tuple[int, int],
                rng: np.random.Generator) -> np.ndarray:
    h, w = size
    base = rng.uniform(40, 200, 3)
    tilt = rng.uniform(-60, 60, (2, 3))
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
    img = base + yy[..., None] * tilt[0] + xx[..., None] * tilt[1]
    img += rng.normal(0, 12, (h, w, 3))
    return img


def _clutter(img: np.ndarray, rng: np.random.Generator) -> None:
    h, w = img.shape[:2]
    for _ in range(rng.integers(3, 9)):
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        p1 = tuple(int(v) for v in rng.uniform(0, [w, h]))
        p2 = tuple(int(v) for v in rng.uniform(0, [w, h]))
        cv2.line(img, p1, p2, color, int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(rng.integers(2, 6)):
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        center = tuple(int(v) for v in rng.uniform(0, [w, h]))
        axes = tuple(int(v) for v in rng.uniform(2, 6, 2))
        cv2.ellipse(img, center, axes, float(rng.uniform(0, 180)), 0, 360,
                    color, -1, cv2.LINE_AA)


def make_scene(rng: np.random.Generator, size: Tuple[int, int] = (192, 192),
               max_objects: int = 6, min_size: float = 14,
               max_size: float = 72) -> Tuple[np.ndarray, np.ndarray, List]:
    """One image, its semantic map and its objects ``(class, polygon)``."""
    h, w = size
    img = _background(size, rng)
    _clutter(img, rng)
    objects, boxes = [], []
    for _ in range(int(rng.integers(1, max_objects + 1)) * 4):
        if len(objects) == max_objects:
            break
        cls = int(rng.integers(len(CLASSES)))
        obj_size = float(np.exp(rng.uniform(np.log(min_size),
                                            np.log(max_size))))
        cx, cy = rng.uniform(obj_size / 2, [w - obj_size / 2,
                                            h - obj_size / 2])
        poly = _polygon(CLASSES[cls], cx, cy, obj_size, rng)
        poly = np.clip(poly, 0, [w - 1, h - 1])
        box = [*poly.min(0), *poly.max(0)]
        if box[2] - box[0] < 4 or box[3] - box[1] < 4:
            continue
        if any(_iou(box, other) > 0.3 for other in boxes):
            continue
        objects.append((cls, poly))
        boxes.append(box)
    # larger first, so small objects stay visible on top
    objects.sort(key=lambda o: -cv2.contourArea(o[1].astype(np.float32)))
    seg = np.ones(size, np.uint8)
    for cls, poly in objects:
        center = np.clip(poly.mean(0).astype(int), 0, [w - 1, h - 1])
        behind = img[center[1], center[0]]
        color = rng.uniform(0, 255, 3)
        while np.abs(color - behind).mean() < MIN_CONTRAST:
            color = rng.uniform(0, 255, 3)
        pts = np.round(poly * 16).astype(np.int32)[None]
        cv2.fillPoly(img, pts, tuple(float(c) for c in color), cv2.LINE_AA,
                     shift=4)
        cv2.fillPoly(seg, pts, 2 + cls, cv2.LINE_8, shift=4)
        cv2.polylines(seg, pts, True, 0, 1, cv2.LINE_8, shift=4)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), seg, objects


def _coco_split(root: str, split: str, num: int, seed: int,
                size: Tuple[int, int]) -> str:
    rng = np.random.default_rng([seed, 0 if split == 'train' else 1])
    img_dir = osp.join(root, 'coco', split)
    os.makedirs(img_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(num):
        img, _, objects = make_scene(rng, size)
        name = f'{split}_{i:05d}.jpg'
        cv2.imwrite(osp.join(img_dir, name), img,
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append(dict(id=i, file_name=name, height=size[0],
                           width=size[1]))
        for cls, poly in objects:
            x1, y1 = poly.min(0)
            x2, y2 = poly.max(0)
            annotations.append(dict(
                id=len(annotations) + 1, image_id=i, category_id=cls + 1,
                bbox=[round(float(v), 2)
                      for v in (x1, y1, x2 - x1, y2 - y1)],
                area=round(float(cv2.contourArea(poly.astype(np.float32))),
                           2),
                segmentation=[[round(float(v), 2) for v in poly.ravel()]],
                iscrowd=0))
    ann_dir = osp.join(root, 'coco', 'annotations')
    os.makedirs(ann_dir, exist_ok=True)
    path = osp.join(ann_dir, f'instances_{split}.json')
    with open(path, 'w') as f:
        json.dump(dict(
            info=dict(description='mmsa synthetic demo data',
                      version=VERSION, seed=seed),
            images=images, annotations=annotations,
            categories=[dict(id=i + 1, name=n)
                        for i, n in enumerate(CLASSES)]), f)
    return path


def _ade_split(root: str, split: str, num: int, seed: int,
               size: Tuple[int, int]) -> None:
    rng = np.random.default_rng([seed, 2 if split == 'training' else 3])
    img_dir = osp.join(root, 'ade', 'images', split)
    ann_dir = osp.join(root, 'ade', 'annotations', split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for i in range(num):
        img, seg, _ = make_scene(rng, size)
        cv2.imwrite(osp.join(img_dir, f'{split}_{i:05d}.jpg'), img,
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(osp.join(ann_dir, f'{split}_{i:05d}.png'), seg)


def generate(root: str, num_train: int = 400, num_val: int = 100,
             seed: int = 0, size: Tuple[int, int] = (192, 192)) -> Dict:
    """Write both datasets under ``root``; skip when already generated.

    A ``meta.json`` stamp records the arguments; a different request (or a
    half-written directory, which has no stamp) is regenerated.
    """
    request = dict(version=VERSION, num_train=num_train, num_val=num_val,
                   seed=seed, size=list(size))
    stamp = osp.join(root, 'meta.json')
    if osp.exists(stamp):
        with open(stamp) as f:
            if json.load(f) == request:
                return request
        os.remove(stamp)
    _coco_split(root, 'train', num_train, seed, size)
    _coco_split(root, 'val', num_val, seed, size)
    _ade_split(root, 'training', num_train, seed, size)
    _ade_split(root, 'validation', num_val, seed, size)
    with open(stamp, 'w') as f:
        json.dump(request, f)
    return request
