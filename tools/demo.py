"""`make demo`: train and evaluate the SA Faster R-CNN demo on the CPU.

1. writes the synthetic demo data to ``data/demo`` (seconds; once);
2. trains ``configs/demo/faster-rcnn_r18-sa_fpn_demo.py`` with
   ``tools/train.py`` and evaluates on the held-out val split with the COCO
   metric (pycocotools) at the end;
3. draws the training curves and, for one val image, the detections and
   the attention maps of an SA block.

Everything lands in ``--work-dir`` (default ``work_dirs/demo``).
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join('configs', 'demo', 'faster-rcnn_r18-sa_fpn_demo.py')
METRICS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s',
           'bbox_mAP_m', 'bbox_mAP_l')


def run(step: str, cmd) -> float:
    print(f'\n==> {step}\n    {" ".join(cmd)}', flush=True)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT)
    if result.returncode:
        sys.exit(f'make demo: step "{step}" failed (exit '
                 f'{result.returncode}); see the output above')
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument('--data-root', default='data/demo')
    args = parser.parse_args()
    py = sys.executable
    work_dir = args.work_dir
    times = {}
    start = time.perf_counter()
    times['data'] = run('demo data', [
        py, 'tools/make_demo_data.py', '--root', args.data_root])
    times['train + eval'] = run('train and evaluate', [
        py, 'tools/train.py', args.config, '--work-dir', work_dir])
    finished = osp.join(ROOT, work_dir, 'finished.json')
    with open(finished) as f:
        state = json.load(f)
    times['pictures'] = run('pictures', [
        py, 'tools/analysis_tools/plot_curves.py', work_dir, '--out',
        osp.join(work_dir, 'curves.png')])
    image = osp.join(args.data_root, 'coco', 'val', 'val_00000.jpg')
    times['pictures'] += run('attention maps', [
        py, 'tools/analysis_tools/visualize_attention.py', args.config,
        state['checkpoint'], image, '--out-dir', work_dir])
    total = time.perf_counter() - start

    metrics = state['metrics'] or {}
    print('\n' + '=' * 60)
    print('SA Faster R-CNN demo, val split (COCO metric, pycocotools):')
    for key in METRICS:
        value = metrics.get(f'coco/{key}')
        if value is not None and value >= 0:  # -1: no objects of that size
            print(f'  {key:<12s} {value:.3f}')
    print('\nwhere things are:')
    print(f'  config + log    {work_dir}/<timestamp>/ (*.log, vis_data/)')
    print(f'  checkpoint      {osp.relpath(state["checkpoint"], ROOT)}'
          if osp.isabs(state['checkpoint']) else
          f'  checkpoint      {state["checkpoint"]}')
    print(f'  final metrics   {work_dir}/finished.json')
    print(f'  pictures        {work_dir}/curves.png, '
          f'{work_dir}/detections.png, {work_dir}/attention.png')
    print('\ntime: ' + ', '.join(f'{k} {v:.0f}s' for k, v in times.items())
          + f'; total {total:.0f}s')
    os.makedirs(osp.join(ROOT, work_dir), exist_ok=True)
    with open(osp.join(ROOT, work_dir, 'demo_summary.json'), 'w') as f:
        json.dump(dict(metrics={k: metrics.get(f'coco/{k}')
                                for k in METRICS},
                       seconds={k: round(v, 1) for k, v in times.items()},
                       total_seconds=round(total, 1)), f, indent=2)


if __name__ == '__main__':
    main()
