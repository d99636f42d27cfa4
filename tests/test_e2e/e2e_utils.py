"""Helpers to run tools/*.py as a user would, on tiny demo data."""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs' / 'demo'
DET_CONFIGS = {
    'faster_rcnn': DEMO / 'faster-rcnn_r18-sa_fpn_demo.py',
    'retinanet': DEMO / 'retinanet_r18-sa_fpn_demo.py',
    'mask_rcnn': DEMO / 'mask-rcnn_r18-sa_fpn_demo.py',
    'van': DEMO / 'faster-rcnn_van-b0_fpn_demo.py',
}
SEG_CONFIG = DEMO / 'upernet_r18-sa_demo.py'


def data_options(root: Path, seg: bool = False) -> List[str]:
    """--cfg-options that point a demo config at ``root``."""
    if seg:
        ade = f'{root}/ade/'
        return [f'{split}.dataset.data_root={ade}'
                for split in ('train_dataloader', 'val_dataloader',
                              'test_dataloader')]
    coco = f'{root}/coco/'
    return [f'{split}.dataset.data_root={coco}'
            for split in ('train_dataloader', 'val_dataloader',
                          'test_dataloader')] + [
        f'val_evaluator.ann_file={coco}annotations/instances_val.json',
        f'test_evaluator.ann_file={coco}annotations/instances_val.json']


def run_tool(args: List[str], timeout: int = 900,
             env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, 'OMP_NUM_THREADS': '2',
                               **(env or {})})


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (result.stdout[-3000:] +
                                    result.stderr[-5000:])
    return result


def read_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)
