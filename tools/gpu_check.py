"""Prove and measure mmsa on a CUDA machine in one command.

    python tools/gpu_check.py [--out DIR] [--wheelhouse WHEELS]
        [--parts tests det seg ops memory] [--compile] [--budget 540]

On a CUDA machine, in this order, within ``--budget`` seconds (9 minutes:
one H100's share; each part also has its own limit, 5 minutes at most):

1. ``--wheelhouse WHEELS`` (``tools/wheelhouse.py --bare WHEELS``, or a
   full one): the wheels of projects this Python lacks go into a temporary
   target, which must then import mmsa and mmengine from there; the parts
   run with it on ``PYTHONPATH`` (after this checkout's mmsa).
2. ``tests``: ``TRITON_INTERPRET=0 pytest -m cuda tests``, the kernels on
   the GPU against the float64 references and what only a GPU shows
   (``tests/test_ops/test_block_end_cuda.py``).
3. The benchmark (``tools/analysis_tools/benchmark_attention.py``) in
   parts: ``det`` (ResNet-50 at 2x3x800x1344, the detectors' backbone and
   input), ``seg`` (ResNetV1c-50 at 8x3x512x512, UperNet's), ``ops`` (the SA
   op against its copy floor), ``memory`` (both memory counts), and with
   ``--compile`` the ``compile`` part (torch.compile of SA-R50, several
   minutes of inductor), off by default.

Progress is printed as it comes; ``DIR/gpu_check.json`` and
``DIR/gpu_check.md`` are rewritten after every part (a part stopped at
its limit keeps the sections it saved), ``DIR/gpu_check.log`` holds all
output. Exit status 0 when every part that ran passed.

Without CUDA it says so in one line and runs its CPU parts, a dry run of
the same machinery that CI executes: the wheelhouse (``--wheelhouse``, or
one built by ``tools/wheelhouse.py --bare`` into a temporary folder, which
needs PyPI) installed whole into a fresh target and imported from there,
the CUDA tests collected (and skipped), and the benchmark parts in
``--quick`` CPU mode; exit status 0 when they pass. ``--dry-run`` runs
these on a CUDA machine too.

Only the standard library is imported here: mmsa's requirements may be
what the wheelhouse brings.
"""
import argparse
import datetime
import json
import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from typing import Dict, List, NamedTuple, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BENCHMARK = osp.join('tools', 'analysis_tools', 'benchmark_attention.py')
TEST_PATHS = ('tests/test_ops', )
#: Projects never installed from a wheelhouse: the machine's own builds.
NEVER_SHADOW = ('torch', 'triton', 'numpy')
#: Top-level modules of projects whose import name differs from theirs.
MODULES = {'pyyaml': 'yaml', 'opencv-python': 'cv2',
           'opencv-python-headless': 'cv2', 'pillow': 'PIL',
           'python-dateutil': 'dateutil', 'markdown-it-py': 'markdown_it'}


class Part(NamedTuple):
    """One part of the check: seconds it may take on one H100 (``limit``,
    where it is stopped) and the benchmark's arguments (None: the tests)."""
    name: str
    limit: int
    args: Optional[tuple]
    what: str


#: The parts in the order they run. Limits from the H200 figures of a
#: ResNet-50 train step (28 ms fp32, 24 ms fp16 at 2x3x800x1344) and the
#: first-call costs (Triton's JIT, about 0.5-1 s a kernel variant, and
#: cuDNN's autotuning), budgeted in docs/gpu_check.md.
PARTS = (
    Part('tests', 240, None, 'CUDA tests (pytest -m cuda)'),
    Part('det', 180, ('--skip-ops', '--skip-memory', '--shapes', 'det',
                      '--arch', 'r50', '--compile'),
         'ResNet-50 train step and inference at 2x3x800x1344'),
    Part('seg', 150, ('--skip-ops', '--skip-memory', '--shapes', 'seg',
                      '--arch', 'r50-v1c', '--compile'),
         'ResNetV1c-50 train step and inference at 8x3x512x512'),
    Part('ops', 90, ('--skip-backbones', '--skip-memory', '--compile'),
         'SA op against its copy floor'),
    Part('memory', 75, ('--skip-ops', '--skip-backbones'),
         'memory saved for backward and allocated after the forward'),
    Part('compile', 300, ('--skip-ops', '--skip-memory', '--shapes', 'det',
                          '--precisions', 'fp32', '--attentions', 'SA',
                          '--compile', 'SA', '--compile-budget', '200'),
         'torch.compile of SA-R50 (inductor)'),
)
DEFAULT_PARTS = ('tests', 'det', 'seg', 'ops', 'memory')
#: pytest-xdist processes for the CUDA tests, where it is installed.
XDIST_WORKERS = 4
#: A part is not started with less time than this left in the budget.
MIN_START_S = 45
#: The CPU dry run: tiny inputs, one round, SA alone (the memory part runs
#: its kernels in Triton's interpreter: about a minute).
DRY_RUN_ARGS = ('--quick', '--rounds', '1', '--warmup', '0', '--attentions',
                'SA')
DRY_RUN_LIMIT = 240


def now() -> str:
    return datetime.datetime.now().isoformat(timespec='seconds')


class Log:
    """Prints progress and keeps it in ``gpu_check.log``."""

    def __init__(self, path: str) -> None:
        self.file = open(path, 'w')

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.file.write(line + '\n')
        self.file.flush()


def run_streamed(cmd: Sequence[str], env: dict, limit: float, log: Log,
                 prefix: str, cwd: str = ROOT) -> Dict[str, object]:
    """Runs ``cmd``, each output line logged with ``prefix``; after
    ``limit`` seconds its process group is stopped (SIGTERM, then SIGKILL).
    Returns rc (None when stopped), seconds and whether it timed out."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            errors='replace', start_new_session=True)

    def pump():
        for line in proc.stdout:
            log(f'{prefix}{line.rstrip()}')

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        log(f'{prefix}stopped at its limit of {limit:.0f} s')
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
    reader.join(timeout=10)
    return dict(rc=None if timed_out else proc.returncode,
                seconds=round(time.perf_counter() - start, 1),
                timed_out=timed_out)


def probe(python: str, env: dict) -> dict:
    """The machine as the parts' Python sees it (a subprocess: no CUDA
    context is kept here)."""
    code = (
        'import json, platform, torch\n'
        'info = dict(python=platform.python_version(), '
        'torch=torch.__version__, cuda=torch.cuda.is_available(), '
        'gpus=torch.cuda.device_count() if torch.cuda.is_available() '
        'else 0, cuda_version=torch.version.cuda)\n'
        'try:\n'
        '    import triton\n'
        '    info["triton"] = triton.__version__\n'
        'except Exception as err:\n'
        '    info["triton"] = f"not importable ({err})"\n'
        'if info["cuda"]:\n'
        '    p = torch.cuda.get_device_properties(0)\n'
        '    info.update(gpu=p.name, gpu_memory_gb=round('
        'p.total_memory / 1e9, 1), multiprocessors=p.multi_processor_count,'
        ' capability=f"{p.major}.{p.minor}")\n'
        'print(json.dumps(info))\n')
    done = subprocess.run([python, '-c', code], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit('gpu_check: this Python cannot import torch '
                         f'({done.stderr.strip().splitlines()[-1:]}); run '
                         'it with the Python that has your CUDA torch')
    info = json.loads(done.stdout.strip().splitlines()[-1])
    smi = shutil.which('nvidia-smi')
    if info['cuda'] and smi:
        out = subprocess.run([smi, '--query-gpu=driver_version',
                              '--format=csv,noheader'], capture_output=True,
                             text=True)
        if out.returncode == 0 and out.stdout.strip():
            info['driver'] = out.stdout.strip().splitlines()[0]
    return info


def checkout() -> dict:
    """This checkout's commit and whether it has changes, where git can
    tell."""
    def git(*args):
        done = subprocess.run(['git', *args], cwd=ROOT, capture_output=True,
                              text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    if shutil.which('git') is None:
        return {}
    commit = git('rev-parse', '--short', 'HEAD')
    if commit is None:
        return {}
    return dict(commit=commit, changed=bool(git('status', '--porcelain',
                                                '--untracked-files=no')))


# The wheelhouse.


def normalize(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def wheel_project(path: str) -> str:
    """A wheel's project name, normalized (from its file name)."""
    return normalize(osp.basename(path).split('-')[0])


def installed_projects(python: str, env: dict) -> set:
    """The projects ``python`` has installed, normalized."""
    code = ('import importlib.metadata as m, json\n'
            'print(json.dumps(sorted({d.metadata["Name"] or "" '
            'for d in m.distributions()})))')
    done = subprocess.run([python, '-c', code], env=env,
                          capture_output=True, text=True, check=True)
    return {normalize(n) for n in json.loads(done.stdout)}


def select_wheels(wheels: Sequence[str], installed: set,
                  fresh: bool) -> List[str]:
    """The wheels to install: every one (``fresh``: the dry run proves the
    set complete) or those of projects not installed yet (a GPU machine
    keeps its own packages), never torch, triton or numpy. opencv-python
    counts as installed where another opencv build provides cv2."""
    chosen = []
    has_cv2 = any(p.startswith('opencv-') for p in installed)
    for path in wheels:
        project = wheel_project(path)
        if project in NEVER_SHADOW:
            continue
        if not fresh and (project in installed or
                          (project.startswith('opencv-') and has_cv2)):
            continue
        chosen.append(path)
    return chosen


def top_level_modules(target: str) -> Dict[str, List[str]]:
    """project -> the top-level modules it installed into ``target``."""
    found = {}
    for entry in os.listdir(target):
        if not entry.endswith('.dist-info'):
            continue
        project = normalize(entry[:-len('.dist-info')].rsplit('-', 1)[0])
        names = set()
        with open(osp.join(target, entry, 'RECORD')) as f:
            for line in f:
                path = line.split(',')[0]
                head = path.split('/')[0]
                if head.endswith(('.dist-info', '.data')) or \
                        head.startswith(('..', '__pycache__')):
                    continue
                if '/' in path:
                    names.add(head)
                elif path.endswith('.py'):
                    names.add(path[:-3])
        found[project] = sorted(n for n in names if n.isidentifier())
    return found


#: Imports mmsa and mmengine, and finds (without importing) where each
#: module the target holds is found first.
IMPORT_CHECK = r'''
import importlib.util, json, sys
target, modules = sys.argv[1], json.loads(sys.argv[2])
import mmsa, mmengine
where = {}
for name in modules:
    spec = importlib.util.find_spec(name)
    where[name] = (spec.origin or next(iter(
        spec.submodule_search_locations or []), '')) if spec else ''
outside = {n: f for n, f in where.items() if not f.startswith(target)}
print(json.dumps(dict(mmsa=mmsa.__version__, mmengine=mmengine.__version__,
                      outside=outside)))
'''


def install_wheelhouse(wheelhouse: str, target: str, python: str, env: dict,
                       fresh: bool, log: Log) -> dict:
    """Installs the selected wheels of ``wheelhouse`` into ``target`` with
    pip (no index, no dependencies resolved) and imports mmsa from it in a
    fresh process; raises SystemExit naming what failed."""
    wheels = sorted(osp.join(wheelhouse, n) for n in os.listdir(wheelhouse)
                    if n.endswith('.whl'))
    if not wheels:
        raise SystemExit(f'gpu_check: no wheels in {wheelhouse}; write them '
                         f'with python tools/wheelhouse.py --bare '
                         f'{wheelhouse} (on a machine with PyPI)')
    chosen = select_wheels(wheels, installed_projects(python, env), fresh)
    os.makedirs(target, exist_ok=True)
    size = sum(osp.getsize(w) for w in wheels) / 2**20
    log(f'[wheelhouse] {len(wheels)} wheels ({size:.1f} MiB) in '
        f'{wheelhouse}; installing {len(chosen)} into {target}: '
        + ', '.join(wheel_project(w) for w in chosen))
    if chosen:
        done = subprocess.run(
            [python, '-m', 'pip', 'install', '--no-index', '--no-deps',
             '--no-compile', '--disable-pip-version-check', '--quiet',
             '--target', target, *chosen], env=env, capture_output=True,
            text=True)
        if done.returncode != 0:
            raise SystemExit(f'gpu_check: pip could not install the wheels '
                             f'of {wheelhouse} (exit {done.returncode}):\n'
                             f'{done.stderr.strip()[-2000:]}')
    modules = sorted({m for names in top_level_modules(target).values()
                      for m in names})
    check_env = dict(env, PYTHONPATH=target)
    done = subprocess.run([python, '-c', IMPORT_CHECK, target,
                           json.dumps(modules)], env=check_env, cwd=target,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f'gpu_check: mmsa does not import from {target} '
                         f'with the wheels of {wheelhouse}:\n'
                         f'{done.stderr.strip()[-2000:]}')
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if found['outside']:
        raise SystemExit(f'gpu_check: modules installed into {target} were '
                         f'imported from elsewhere: {found["outside"]}')
    log(f'[wheelhouse] mmsa {found["mmsa"]} and mmengine '
        f'{found["mmengine"]} import from {target} ({len(modules)} modules '
        'checked)')
    return dict(dir=wheelhouse, wheels=len(wheels), mib=round(size, 2),
                installed=[osp.basename(w) for w in chosen],
                mmsa=found['mmsa'], mmengine=found['mmengine'])


def build_wheelhouse(out: str, python: str, log: Log) -> None:
    """``tools/wheelhouse.py --bare out`` for this Python (needs PyPI)."""
    log(f'[wheelhouse] building a bare wheelhouse in {out} (PyPI)')
    done = subprocess.run([python, osp.join(ROOT, 'tools', 'wheelhouse.py'),
                           out, '--bare'], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit('gpu_check: tools/wheelhouse.py failed (it needs '
                         'PyPI; pass --wheelhouse DIR with wheels written '
                         f'elsewhere):\n{done.stderr.strip()[-2000:]}')
    log(f'[wheelhouse] {done.stdout.strip().splitlines()[0]}')


# The parts.


def test_counts(junit: str) -> dict:
    """passed/failed/errors/skipped, the failures' names and first lines,
    and the skip reasons counted, from pytest's JUnit XML."""
    counts = dict(passed=0, failed=0, errors=0, skipped=0, failures=[],
                  skip_reasons={})
    for case in ET.parse(junit).getroot().iter('testcase'):
        name = f'{case.get("classname", "")}::{case.get("name", "")}'
        outcome = 'passed'
        for child in case:
            if child.tag in ('failure', 'error'):
                outcome = 'failed' if child.tag == 'failure' else 'errors'
                message = (child.get('message') or child.text or '').strip()
                counts['failures'].append(
                    dict(test=name, message=message.splitlines()[0][:300]
                         if message else ''))
            elif child.tag == 'skipped':
                outcome = 'skipped'
                reason = (child.get('message') or '').strip()[:200]
                counts['skip_reasons'][reason] = \
                    counts['skip_reasons'].get(reason, 0) + 1
        counts[outcome] += 1
    return counts


def streamed_counts(lines: Sequence[str]) -> dict:
    """What a stopped pytest printed with -v before it stopped."""
    counts = dict(passed=0, failed=0, errors=0, skipped=0, failures=[],
                  skip_reasons={})
    for line in lines:
        # 'path::test OUTCOME' (-v), 'OUTCOME path::test' (-v with xdist)
        found = re.search(r'(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)|'
                          r'(PASSED|FAILED|ERROR|SKIPPED) (\S+::\S+)', line)
        if found:
            outcome = found.group(2) or found.group(3)
            key = {'PASSED': 'passed', 'FAILED': 'failed', 'ERROR': 'errors',
                   'SKIPPED': 'skipped'}[outcome]
            counts[key] += 1
            if key in ('failed', 'errors'):
                counts['failures'].append(dict(
                    test=found.group(1) or found.group(4), message=''))
    return counts


class Check:
    """One run of the check: its result, saved after every part."""

    def __init__(self, args: argparse.Namespace, info: dict, log: Log,
                 work: str) -> None:
        self.args, self.info, self.log, self.work = args, info, log, work
        self.cuda = info['cuda']
        self.start = time.perf_counter()
        self.env = dict(os.environ, PYTHONUNBUFFERED='1')
        self.result = dict(
            tool='gpu_check', version=1, date=now(), cuda=self.cuda,
            machine=info, checkout=checkout(),
            command=' '.join(['python', osp.relpath(sys.argv[0], ROOT)] +
                             sys.argv[1:]),
            budget_s=args.budget, wheelhouse=None, parts=[], tests=None,
            benchmark={}, headline=None)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def save(self) -> None:
        self.result['seconds'] = round(self.elapsed(), 1)
        self.result['headline'] = headline(self.result)
        for name, text in (('gpu_check.json',
                            json.dumps(self.result, indent=1)),
                           ('gpu_check.md', markdown(self.result))):
            path = osp.join(self.args.out, name)
            with open(path + '.tmp', 'w') as f:
                f.write(text)
            os.replace(path + '.tmp', path)

    def set_path(self, target: Optional[str]) -> None:
        """The parts import this checkout's mmsa first, then the target."""
        paths = [ROOT] + ([target] if target else []) + [
            p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep)
            if p]
        self.env['PYTHONPATH'] = os.pathsep.join(paths)

    def run_part(self, part: Part) -> None:
        left = self.args.budget - self.elapsed()
        limit = min(part.limit if self.cuda else DRY_RUN_LIMIT, left)
        record = dict(name=part.name, what=part.what, limit_s=round(limit))
        self.result['parts'].append(record)
        if limit < MIN_START_S:
            record.update(status='not run: budget spent', seconds=0)
            self.log(f'[{part.name}] not run: {left:.0f} s of the '
                     f'{self.args.budget} s budget left')
            self.save()
            return
        self.log(f'[{part.name}] {part.what}: up to {limit:.0f} s '
                 f'({self.elapsed():.0f} s into the check)')
        if part.args is None:
            done = self.tests(limit)
        else:
            done = self.benchmark(part, limit)
        record.update(done)
        self.log(f'[{part.name}] {record["status"]} in '
                 f'{record["seconds"]:.0f} s')
        self.save()

    def tests(self, limit: float) -> dict:
        junit = osp.join(self.work, 'tests.xml')
        options = ['-v', '-rfEs'] if self.cuda else ['-q', '-rfE']
        if self.cuda and have_module(sys.executable, 'pytest_timeout',
                                     self.env):
            options += ['--timeout', '200', '--timeout-method', 'signal']
        if self.cuda and have_module(sys.executable, 'xdist', self.env):
            # Triton's JIT and inductor compile on one core a process:
            # four processes share the GPU (the tests needing most of its
            # memory run in one, one after another)
            options += ['-n', str(XDIST_WORKERS), '--dist', 'loadgroup']
        cmd = [sys.executable, '-m', 'pytest', '-m', 'cuda', *options,
               '-p', 'no:cacheprovider', f'--junitxml={junit}', *TEST_PATHS]
        env = dict(self.env, TRITON_INTERPRET='0')
        lines: List[str] = []

        def keep(line: str) -> None:
            lines.append(line)
            self.log(line)

        done = run_streamed(cmd, env, limit, keep, '[tests] ')
        counts = (test_counts(junit) if osp.exists(junit) else
                  streamed_counts(lines))
        self.result['tests'] = counts
        rc, ran = done['rc'], counts['passed'] + counts['failed']
        if done['timed_out']:
            status = 'stopped at its limit'
        elif rc == 5:
            status = 'failed: no CUDA tests collected'
        elif rc != 0:
            status = f'failed (pytest exit {rc})'
        elif self.cuda and not ran:
            status = 'failed: every CUDA test was skipped'
        elif not self.cuda and ran:
            status = 'failed: CUDA tests ran without CUDA'
        else:
            status = 'passed'
        return dict(status=status, seconds=done['seconds'],
                    counts={k: counts[k] for k in ('passed', 'failed',
                                                   'errors', 'skipped')})

    def benchmark(self, part: Part, limit: float) -> dict:
        stem = osp.join(self.work, part.name)
        cmd = [sys.executable, BENCHMARK, '--device',
               'cuda' if self.cuda else 'cpu', '--out', stem, *part.args]
        if self.cuda:
            cmd += ['--rounds', str(self.args.rounds), '--warmup',
                    str(self.args.warmup)]
        else:
            cmd += list(DRY_RUN_ARGS)
        env = dict(self.env)
        if self.cuda:
            env['TRITON_INTERPRET'] = '0'
        done = run_streamed(cmd, env, limit, self.log, f'[{part.name}] ')
        saved = None
        if osp.exists(stem + '.json'):
            with open(stem + '.json') as f:
                saved = json.load(f)
            with open(stem + '.md') as f:
                saved['markdown'] = f.read()
            self.result['benchmark'][part.name] = saved
        if done['timed_out']:
            status = ('stopped at its limit; kept what it saved'
                      if saved else 'stopped at its limit before saving')
        elif done['rc'] == 0:
            status = 'passed'
        else:
            status = f'failed (exit {done["rc"]})'
        return dict(status=status, seconds=done['seconds'])


def have_module(python: str, name: str, env: dict) -> bool:
    code = f'import importlib.util as u; print(u.find_spec({name!r}) ' \
        'is not None)'
    done = subprocess.run([python, '-c', code], env=env, capture_output=True,
                          text=True)
    return done.stdout.strip() == 'True'


# The report.


def headline(result: dict) -> str:
    """The check's first line (docs/performance.md's GPU block once
    landed): the GPU, the attentions' train-step overheads at the
    detectors' input, the CUDA tests."""
    if not result['cuda']:
        return 'GPU: not measured (a dry run without CUDA)'
    machine = result['machine']
    what = (f'{machine.get("gpu", "GPU")}, torch {machine["torch"]}, '
            f'triton {machine["triton"]}')
    rows = result['benchmark'].get('det', {}).get('backbones', [])
    cells = []
    for name in ('SA', 'SE', 'ECA', 'SGE', 'CBAM'):
        found = {r['precision']: r['train_overhead'][1] for r in rows
                 if r['model'] == f'{name} mmsa' and 'train_overhead' in r}
        if found:
            cells.append(f'{name} ' + ' / '.join(
                f'{found[p]:+.1%}' for p in ('fp32', 'amp') if p in found))
    tests = result.get('tests') or {}
    line = f'GPU ({what}): '
    if cells:
        line += ('ResNet-50 train-step overhead over plain R50 at '
                 '2x3x800x1344, fp32 / fp16 autocast: ' + ', '.join(cells))
    else:
        line += 'train-step overhead not measured'
    if tests:
        line += (f'; CUDA tests {tests["passed"]} passed, '
                 f'{tests["failed"] + tests["errors"]} failed, '
                 f'{tests["skipped"]} skipped')
    return line + '.'


def describe_checkout(found: dict) -> str:
    if not found:
        return '- (not a git checkout)'
    return found['commit'] + (' with changes' if found['changed'] else '')


def markdown(result: dict) -> str:
    machine = result['machine']
    lines = ['# mmsa GPU check', '', result['headline'] or '', '',
             '| | |', '|---|---|']
    facts = [('GPU', machine.get('gpu', 'none (dry run)')),
             ('GPUs', machine.get('gpus', 0)),
             ('driver', machine.get('driver', '-')),
             ('CUDA (torch)', machine.get('cuda_version') or '-'),
             ('torch', machine['torch']), ('triton', machine['triton']),
             ('Python', machine['python']), ('date', result['date']),
             ('checkout', describe_checkout(result['checkout'])),
             ('command', f'`{result["command"]}`'),
             ('seconds', f'{result.get("seconds", 0):.0f} of '
                         f'{result["budget_s"]}')]
    wheelhouse = result.get('wheelhouse')
    if wheelhouse:
        facts.append(('wheelhouse', f'{wheelhouse["wheels"]} wheels, '
                      f'{wheelhouse["mib"]} MiB; installed '
                      f'{len(wheelhouse["installed"])}; mmsa '
                      f'{wheelhouse["mmsa"]}, mmengine '
                      f'{wheelhouse["mmengine"]}'))
    lines += [f'| {k} | {v} |' for k, v in facts]
    lines += ['', '| part | what | status | seconds | limit |',
              '|---|---|---|---|---|']
    lines += [f'| {p["name"]} | {p["what"]} | {p.get("status", "running")} '
              f'| {p.get("seconds", 0):.0f} | {p["limit_s"]} |'
              for p in result['parts']]
    tests = result.get('tests')
    if tests:
        lines += ['', '## CUDA tests', '',
                  f'{tests["passed"]} passed, {tests["failed"]} failed, '
                  f'{tests["errors"]} errors, {tests["skipped"]} skipped.']
        lines += [f'- FAILED `{f["test"]}`: {f["message"]}'
                  for f in tests['failures']]
        lines += [f'- skipped {n}: {reason}'
                  for reason, n in tests.get('skip_reasons', {}).items()]
    for name, part in result['benchmark'].items():
        lines += ['', f'## Benchmark part: {name}', '',
                  part.get('markdown', '').strip()]
    return '\n'.join(lines) + '\n'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add = parser.add_argument
    add('--out', default=osp.join(ROOT, 'work_dirs', 'gpu_check'),
        help='folder for gpu_check.json, .md and .log')
    add('--wheelhouse', metavar='DIR',
        help='wheels to install first (tools/wheelhouse.py --bare DIR)')
    add('--parts', nargs='+', choices=[p.name for p in PARTS],
        default=list(DEFAULT_PARTS))
    add('--compile', action='store_true',
        help='add the torch.compile part (several minutes)')
    add('--budget', type=int, default=540,
        help='seconds for the whole check; parts that would start later '
        'are not run (default 540: 9 minutes)')
    add('--dry-run', action='store_true',
        help='the CPU parts only, also on a CUDA machine (the parts see '
        'no GPU: CUDA_VISIBLE_DEVICES is empty)')
    add('--rounds', type=int, default=10, help='timed rounds on CUDA')
    add('--warmup', type=int, default=2, help='untimed rounds on CUDA')
    args = parser.parse_args(argv)
    if args.compile and 'compile' not in args.parts:
        args.parts.append('compile')
    if args.wheelhouse and not osp.isdir(args.wheelhouse):
        parser.error(f'--wheelhouse {args.wheelhouse}: no such folder; '
                     'write one with python tools/wheelhouse.py --bare DIR')
    args.out = osp.abspath(args.out)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    log = Log(osp.join(args.out, 'gpu_check.log'))
    if args.dry_run:
        os.environ['CUDA_VISIBLE_DEVICES'] = ''  # for every part
    with tempfile.TemporaryDirectory(prefix='gpu_check-') as work:
        info = probe(sys.executable, dict(os.environ))
        if not info['cuda']:
            log(f'gpu_check: no CUDA device (torch {info["torch"]}); a dry '
                'run of the CPU parts: wheelhouse, CUDA tests collected, '
                'benchmark --quick on the CPU')
        else:
            log(f'gpu_check: {info["gpu"]} x{info["gpus"]}, torch '
                f'{info["torch"]}, triton {info["triton"]}, Python '
                f'{info["python"]}; budget {args.budget} s')
        check = Check(args, info, log, work)
        target = None
        wheelhouse = args.wheelhouse
        if wheelhouse is None and not info['cuda']:
            wheelhouse = osp.join(work, 'wheelhouse')
            build_wheelhouse(wheelhouse, sys.executable, log)
        if wheelhouse:
            target = osp.join(work, 'site')
            check.result['wheelhouse'] = install_wheelhouse(
                osp.abspath(wheelhouse), target, sys.executable,
                dict(os.environ), fresh=not info['cuda'], log=log)
        check.set_path(target)
        check.save()
        for part in PARTS:
            if part.name in args.parts:
                check.run_part(part)
        failed = [p['name'] for p in check.result['parts']
                  if p['status'] != 'passed']
        log(f'gpu_check: {check.result["headline"]}')
        log(f'gpu_check: done in {check.elapsed():.0f} s; '
            + (f'not passed: {", ".join(failed)}' if failed else
               'every part passed') + f'; results in {args.out}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
