"""tools/gpu_check.py: its parts, budget, wheelhouse install and report.

The whole dry run (a bare wheelhouse from PyPI, every part on the CPU) is
``make gpu-check-dry``, which ``make test`` runs; here its pieces, and one
short run end to end with a wheelhouse built offline.
"""
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from testing_utils import load_tool

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    return load_tool('tools/gpu_check.py')


def test_every_part_fits_five_minutes_and_compile_is_off_by_default():
    check = _tool()
    assert all(p.limit <= 300 for p in check.PARTS)
    assert 'compile' not in check.DEFAULT_PARTS
    assert check.parse_args([]).budget == 540  # 9 minutes
    assert 'compile' in check.parse_args(['--compile']).parts
    # the benchmark's arguments of each part parse
    bench = load_tool('tools/analysis_tools/benchmark_attention.py')
    for part in check.PARTS:
        if part.args is not None:
            bench.parse_args(list(part.args))


def test_every_cuda_test_lives_where_the_check_runs_them():
    check = _tool()
    pattern = re.compile(r'cuda_test\(|mark\.cuda\b|KERNEL_DEVICES')
    found = {p.relative_to(ROOT).as_posix()
             for p in (ROOT / 'tests').rglob('test_*.py')
             if p != Path(__file__) and pattern.search(p.read_text())}
    assert found, 'no CUDA tests found'
    assert all(f.startswith(check.TEST_PATHS) for f in found), found


def test_wheels_of_installed_projects_stay_out_unless_fresh():
    check = _tool()
    wheels = [f'/w/{n}-1.0-py3-none-any.whl' for n in (
        'mmsa', 'mmengine', 'numpy', 'torch', 'opencv_python', 'PyYAML')]
    installed = {'numpy', 'torch', 'opencv-python-headless', 'pyyaml'}
    chosen = [w.split('/')[-1].split('-')[0] for w in
              check.select_wheels(wheels, installed, fresh=False)]
    # opencv-python: the headless build provides cv2
    assert chosen == ['mmsa', 'mmengine']
    fresh = [w.split('/')[-1].split('-')[0] for w in
             check.select_wheels(wheels, installed, fresh=True)]
    assert fresh == ['mmsa', 'mmengine', 'opencv_python', 'PyYAML']


def test_top_level_modules_come_from_the_records(tmp_path):
    info = tmp_path / 'PyYAML-6.0.dist-info'
    info.mkdir()
    (info / 'RECORD').write_text(
        'yaml/__init__.py,sha256=x,1\n_yaml/__init__.py,,\n'
        'PyYAML-6.0.dist-info/RECORD,,\n../../bin/tool,,\n'
        'six.py,sha256=y,2\n__pycache__/six.cpython-311.pyc,,\n')
    assert _tool().top_level_modules(str(tmp_path)) == {
        'pyyaml': ['_yaml', 'six', 'yaml']}


JUNIT = '''<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite>
<testcase classname="tests.a" name="test_ok[cuda]" time="1"/>
<testcase classname="tests.a" name="test_bad[cuda]" time="1">
<failure message="AssertionError: error 0.5 (torch.float32)&#10;more">tb
</failure></testcase>
<testcase classname="tests.b" name="test_two_gpus" time="0">
<skipped message="needs 2 CUDA devices, found 1"/></testcase>
<testcase classname="tests.b" name="test_x" time="0"><error message="boom"/>
</testcase></testsuite></testsuites>'''


def test_test_counts_from_junit_and_from_a_stopped_run(tmp_path):
    check = _tool()
    (tmp_path / 'j.xml').write_text(JUNIT)
    counts = check.test_counts(str(tmp_path / 'j.xml'))
    assert (counts['passed'], counts['failed'], counts['errors'],
            counts['skipped']) == (1, 1, 1, 1)
    assert counts['failures'][0] == dict(
        test='tests.a::test_bad[cuda]',
        message='AssertionError: error 0.5 (torch.float32)')
    assert counts['skip_reasons'] == {'needs 2 CUDA devices, found 1': 1}
    lines = ['[tests] tests/a.py::test_ok[cuda] PASSED [ 10%]',
             '[tests] [gw1] [ 20%] FAILED tests/a.py::test_bad[cuda]',
             '[tests] tests/b.py::test_two SKIPPED (needs 2) [ 30%]']
    counts = check.streamed_counts(lines)
    assert (counts['passed'], counts['failed'], counts['skipped']) == (
        1, 1, 1)
    assert counts['failures'] == [dict(test='tests/a.py::test_bad[cuda]',
                                       message='')]


def test_a_part_is_stopped_at_its_limit_with_its_children(tmp_path):
    check = _tool()
    lines = []
    code = ('import subprocess, sys, time\n'
            'child = subprocess.Popen([sys.executable, "-c", '
            '"import time; time.sleep(60)"])\n'
            'print(child.pid, flush=True)\n'
            'time.sleep(60)\n')
    done = check.run_streamed([sys.executable, '-c', code], dict(os.environ),
                              3, lines.append, '[part] ')
    assert done['timed_out'] and done['rc'] is None
    assert done['seconds'] < 30
    assert lines[-1] == '[part] stopped at its limit of 3 s'
    child = int(lines[0].split()[-1])
    assert _ends_within(child, 10)  # with the process group


def _ends_within(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f'/proc/{pid}/stat').read_text().split()[2]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == 'Z':
            return True
        time.sleep(0.1)
    return False


def _result(cuda=True):
    rows = []
    for precision, over in (('fp32', 0.012), ('amp', 0.031)):
        for model, value in (('R50', 0.), ('SA official', 0.9),
                             ('SA mmsa', over), ('SE mmsa', -0.004)):
            rows.append(dict(input='det', size=[2, 3, 800, 1344],
                             precision=precision, model=model, arch='r50',
                             train_overhead=[value - .01, value,
                                             value + .01]))
    return dict(tool='gpu_check', cuda=cuda, date='2026-12-07T12:00:00',
                machine=dict(gpu='NVIDIA H100 80GB HBM3', gpus=1,
                             torch='2.11.0+cu130', triton='3.6.0',
                             python='3.12.3', cuda_version='13.0',
                             driver='580.159.04'),
                checkout=dict(commit='abc1234', changed=False),
                command='python tools/gpu_check.py', budget_s=540,
                seconds=431.0, wheelhouse=None,
                parts=[dict(name='tests', what='CUDA tests', limit_s=240,
                            status='passed', seconds=150.2),
                       dict(name='det', what='R50 det', limit_s=180,
                            status='stopped at its limit; kept what it '
                            'saved', seconds=180.1)],
                tests=dict(passed=60, failed=1, errors=0, skipped=5,
                           failures=[dict(test='t::x', message='boom')],
                           skip_reasons={'needs 2 CUDA devices': 5}),
                benchmark=dict(det=dict(backbones=rows,
                                        markdown='| det table |')),
                headline=None)


def test_headline_and_markdown_of_a_gpu_result():
    check = _tool()
    result = _result()
    result['headline'] = check.headline(result)
    assert result['headline'] == (
        'GPU (NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, triton 3.6.0): '
        'ResNet-50 train-step overhead over plain R50 at 2x3x800x1344, '
        'fp32 / fp16 autocast: SA +1.2% / +3.1%, SE -0.4% / -0.4%; CUDA '
        'tests 60 passed, 1 failed, 5 skipped.')
    table = check.markdown(result)
    assert '| GPU | NVIDIA H100 80GB HBM3 |' in table
    assert '| checkout | abc1234 |' in table
    assert ('| det | R50 det | stopped at its limit; kept what it saved | '
            '180 | 180 |') in table
    assert '- FAILED `t::x`: boom' in table
    assert '## Benchmark part: det\n\n| det table |' in table
    assert check.headline(_result(cuda=False)) == (
        'GPU: not measured (a dry run without CUDA)')


def test_a_part_is_not_started_once_the_budget_is_spent(tmp_path):
    check = _tool()
    args = check.parse_args(['--out', str(tmp_path), '--budget', '10'])
    info = dict(cuda=True, torch='2.11', triton='3.6', python='3.12',
                gpu='GPU', gpus=1)
    run = check.Check(args, info, check.Log(str(tmp_path / 'log')),
                      str(tmp_path))
    run.run_part(check.PARTS[1])
    assert run.result['parts'][0]['status'] == 'not run: budget spent'
    saved = json.loads((tmp_path / 'gpu_check.json').read_text())
    assert saved['parts'][0]['name'] == 'det'


@pytest.mark.slow
def test_dry_run_installs_the_wheelhouse_and_runs_the_cpu_parts(tmp_path):
    """Without CUDA, end to end: a wheelhouse (mmsa's wheel, built
    offline) installed into a fresh target and imported from it, the CUDA
    tests collected and skipped, the ops part on the CPU; one line says
    there is no CUDA; exit 0; the JSON and markdown written."""
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    load_tool('tools/wheelhouse.py').build_mmsa(str(wheels))
    out = tmp_path / 'out'
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    done = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'gpu_check.py'), '--wheelhouse',
         str(wheels), '--out', str(out), '--parts', 'tests', 'ops'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    first = done.stdout.splitlines()[0]
    assert first.startswith('gpu_check: no CUDA device (torch ')
    result = json.loads((out / 'gpu_check.json').read_text())
    assert not result['cuda']
    assert [(p['name'], p['status']) for p in result['parts']] == [
        ('tests', 'passed'), ('ops', 'passed')]
    assert result['tests']['skipped'] > 40 and result['tests']['passed'] == 0
    assert result['wheelhouse']['installed'][0].startswith('mmsa-')
    assert len(result['benchmark']['ops']['ops']) == 8
    assert (out / 'gpu_check.md').read_text().startswith(
        '# mmsa GPU check\n\nGPU: not measured (a dry run without CUDA)')
    assert 'ops' in (out / 'gpu_check.log').read_text()
    with zipfile.ZipFile(next(wheels.glob('mmsa-*.whl'))) as whl:
        assert 'tools/gpu_check.py' not in whl.namelist()
