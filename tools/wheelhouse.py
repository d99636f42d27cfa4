"""Write the wheels that install mmsa on an offline machine that has torch.

    python tools/wheelhouse.py DIR [--python-version 3.12]
        [--platform manylinux_2_28_x86_64] [--bare]

DIR receives mmsa as a pure-Python wheel (built with ``MMSA_NO_EXT=1``:
without the CPU C++ kernel, which a CUDA machine does not use) and, as
binary wheels for the target Python and platform (defaults: the running
ones), everything mmsa needs besides torch -- numpy, mmengine 0.10.7 and
its dependencies -- and pytest for ``tools/gpu_check.py``. torch is never
downloaded: the machine keeps its own CUDA build. On the target::

    pip install --no-index --find-links DIR mmsa

``--bare`` writes only what a CUDA image with torch, numpy, matplotlib,
pyyaml, rich, opencv-python-headless and pytest lacks (mmengine, addict,
yapf, termcolor, platformdirs, mmsa; about 1 MB), for
``pip install --no-index --no-deps --target T DIR/*.whl`` (nothing in it
shadows the image's numpy or torch) or ``tools/gpu_check.py --wheelhouse
DIR``.

A ``--platform`` of ``manylinux_2_N_ARCH`` (or ``manylinux2014_ARCH``)
takes the wheels of every older manylinux too, as pip on such a machine
would. The set is pip's resolution for the target (``pip install
--dry-run --report``); at the end every requirement of every wheel in DIR
is checked against the target's Python and platform. Wheels of other
versions left in DIR by an earlier run are removed; those of the same
version are not downloaded again.
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MMENGINE = 'mmengine==0.10.7'
#: What tools/gpu_check.py needs beyond mmsa's own requirements.
CHECK_REQUIREMENTS = ('pytest', )
#: Never downloaded: the target's CUDA build stays.
ASSUMED = ('torch', )
#: What a bare CUDA image holds of mmsa's closure (besides torch): the
#: H100/H200 machines mmsa's GPU check runs on have these (opencv as
#: opencv-python-headless, which provides the same cv2 that mmengine's
#: opencv-python requirement asks for).
IMAGE = ('numpy', 'matplotlib', 'contourpy', 'cycler', 'fonttools',
         'kiwisolver', 'packaging', 'pillow', 'pyparsing', 'python-dateutil',
         'six', 'tzdata', 'pyyaml', 'rich', 'markdown-it-py', 'mdurl',
         'pygments', 'opencv-python', 'pytest', 'iniconfig', 'pluggy')


def normalize(name: str) -> str:
    """PEP 503 project name: lower case, runs of -_. as one '-'."""
    return re.sub(r'[-_.]+', '-', name).lower()


def platform_tags(platforms: Sequence[str]) -> List[str]:
    """``platforms`` with, for each manylinux tag, the older manylinux tags
    of its architecture (a glibc-2.28 machine runs manylinux_2_17 wheels;
    pip matches ``--platform`` tags exactly)."""
    legacy = {'manylinux2014': 17, 'manylinux2010': 12, 'manylinux1': 5}
    tags: List[str] = []
    for tag in platforms:
        found = re.fullmatch(r'manylinux_2_(\d+)_(\w+)', tag)
        name, _, arch = tag.partition('_')
        if found:
            glibc, arch = int(found.group(1)), found.group(2)
        elif name in legacy:
            glibc = legacy[name]
        else:
            tags.append(tag)
            continue
        tags += [f'manylinux_2_{m}_{arch}' for m in range(glibc, 4, -1)]
        tags += [f'{old}_{arch}' for old, m in legacy.items() if m <= glibc]
    return list(dict.fromkeys(tags))


def target_args(python_version: Optional[str],
                platforms: Sequence[str]) -> List[str]:
    """pip's options that select wheels for the target (none: the running
    interpreter and platform)."""
    args = []
    for tag in platform_tags(platforms):
        args += ['--platform', tag]
    if python_version:
        args += ['--python-version', python_version, '--implementation',
                 'cp']
    return args


def marker_environment(python_version: Optional[str],
                       platforms: Sequence[str]) -> Dict[str, str]:
    """The values environment markers see on the target."""
    env = dict(_packaging().markers.default_environment())
    if python_version:
        env['python_version'] = python_version
        env['python_full_version'] = f'{python_version}.0'
        env['implementation_name'] = 'cpython'
        env['platform_python_implementation'] = 'CPython'
    if platforms:
        tag = platforms[0]
        arch = re.sub(r'^(manylinux\d*(_2_\d+)?|musllinux_1_\d+|linux)_',
                      '', tag)
        if tag.startswith(('manylinux', 'musllinux', 'linux')):
            env.update(sys_platform='linux', platform_system='Linux',
                       os_name='posix', platform_machine=arch)
        elif tag.startswith('win'):
            env.update(sys_platform='win32', platform_system='Windows',
                       os_name='nt',
                       platform_machine='AMD64' if arch.endswith('amd64')
                       else arch)
        elif tag.startswith('macosx'):
            env.update(sys_platform='darwin', platform_system='Darwin',
                       os_name='posix', platform_machine=tag.split('_')[-1])
    return env


def _packaging():
    try:
        import packaging.markers
        import packaging.requirements
        import packaging.version
        return packaging
    except ImportError:  # pip always vendors it
        from pip._vendor import packaging
        return packaging


def _pip(args: Sequence[str], env: Optional[dict] = None,
         quiet: bool = True) -> str:
    cmd = [sys.executable, '-m', 'pip', *args]
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f'wheelhouse: `{" ".join(cmd)}` failed '
                         f'(exit {done.returncode}):\n'
                         f'{done.stderr.strip()[-3000:]}')
    if not quiet:
        print(done.stdout, end='')
    return done.stdout


def wheel_metadata(path: str) -> Tuple[str, str, List[str]]:
    """(project name, version, requirements) from a wheel's METADATA."""
    with zipfile.ZipFile(path) as whl:
        name = next(n for n in whl.namelist()
                    if n.endswith('.dist-info/METADATA'))
        text = whl.read(name).decode('utf-8')
    fields: Dict[str, List[str]] = {}
    for line in text.split('\n\n')[0].splitlines():
        key, sep, value = line.partition(': ')
        if sep:
            fields.setdefault(key, []).append(value.strip())
    return (fields['Name'][0], fields['Version'][0],
            fields.get('Requires-Dist', []))


def build_mmsa(out_dir: str) -> str:
    """mmsa's pure-Python wheel in ``out_dir``, built from a copy of the
    sources without compiled files (a kernel built in place stays out)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = osp.join(tmp, 'mmsa-src')
        os.makedirs(src)
        for name in ('setup.py', 'README.md', 'LICENSE'):
            if osp.exists(osp.join(ROOT, name)):
                shutil.copy(osp.join(ROOT, name), src)
        ignore = shutil.ignore_patterns('*.so', '*.pyd', '*.pyc',
                                        '__pycache__', '*.egg-info')
        for name in ('mmsa', 'requirements'):
            shutil.copytree(osp.join(ROOT, name), osp.join(src, name),
                            ignore=ignore)
        build = osp.join(tmp, 'dist')
        # with setuptools here, build offline; else pip fetches it into an
        # isolated build environment
        isolation = (['--no-build-isolation']
                     if importlib.util.find_spec('setuptools') else [])
        _pip(['wheel', '--no-deps', *isolation, '-w', build, src],
             env={'MMSA_NO_EXT': '1'})
        (wheel, ) = os.listdir(build)
        if not wheel.endswith('-py3-none-any.whl'):
            raise SystemExit(f'wheelhouse: mmsa built as {wheel}, not a pure '
                             'wheel (py3-none-any); MMSA_NO_EXT=1 must skip '
                             'the C++ kernel in setup.py')
        with zipfile.ZipFile(osp.join(build, wheel)) as whl:
            binaries = [n for n in whl.namelist()
                        if n.endswith(('.so', '.pyd'))]
        if binaries:
            raise SystemExit(f'wheelhouse: the mmsa wheel holds compiled '
                             f'files {binaries}; it must be pure Python')
        for old in os.listdir(out_dir):
            if old.startswith('mmsa-') and old.endswith('.whl'):
                os.remove(osp.join(out_dir, old))
        shutil.copy(osp.join(build, wheel), out_dir)
    return osp.join(out_dir, wheel)


def resolve(requirements: Sequence[str], target: Sequence[str]
            ) -> List[Tuple[str, str]]:
    """[(project, version)] pip installs for ``requirements`` on the target
    (resolved from the index's metadata; nothing is installed)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = osp.join(tmp, 'report.json')
        _pip(['install', '--dry-run', '--ignore-installed', '--quiet',
              '--only-binary=:all:', '--report', report, '--target',
              osp.join(tmp, 'target'), *target, *requirements])
        with open(report) as f:
            installs = json.load(f)['install']
    return [(item['metadata']['name'], item['metadata']['version'])
            for item in installs]


def unmet_requirements(wheels: Iterable[str], provided: Iterable[str],
                       environment: Dict[str, str]) -> List[str]:
    """Each requirement of each wheel (for the target's markers, no extras)
    met neither by a wheel among ``wheels`` nor by a project in
    ``provided``, as 'wheel: requirement'."""
    pkg = _packaging()
    have = {}
    metadata = []
    for path in wheels:
        name, version, requires = wheel_metadata(path)
        have[normalize(name)] = pkg.version.Version(version)
        metadata.append((osp.basename(path), requires))
    provided = {normalize(p) for p in provided}
    unmet = []
    for wheel, requires in metadata:
        for line in requires:
            req = pkg.requirements.Requirement(line)
            if req.marker is not None and not req.marker.evaluate(
                    dict(environment, extra='')):
                continue
            name = normalize(req.name)
            if name in provided:
                continue
            if name not in have or not req.specifier.contains(
                    have[name], prereleases=True):
                unmet.append(f'{wheel}: {line}')
    return unmet


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('dir', help='folder for the wheels (created)')
    parser.add_argument('--python-version', metavar='X.Y',
                        help='target Python (default: this one, '
                        f'{platform.python_version()})')
    parser.add_argument('--platform', action='append', default=[],
                        metavar='TAG',
                        help='target platform tag, e.g. '
                        'manylinux_2_28_x86_64 (repeatable; default: this '
                        'machine)')
    parser.add_argument('--bare', action='store_true',
                        help='only what a CUDA image with torch, numpy, '
                        'matplotlib, pyyaml, rich, opencv and pytest lacks')
    args = parser.parse_args(argv)
    if args.python_version and not re.fullmatch(r'3\.\d+',
                                                args.python_version):
        parser.error(f'--python-version {args.python_version}: give '
                     'MAJOR.MINOR, e.g. 3.12')
    return args


def main(argv: Optional[Sequence[str]] = None) -> List[str]:
    """Writes the wheelhouse; returns the wheels' paths."""
    args = parse_args(argv)
    out = osp.abspath(args.dir)
    os.makedirs(out, exist_ok=True)
    target = target_args(args.python_version, args.platform)
    mmsa = build_mmsa(out)
    _, _, requires = wheel_metadata(mmsa)
    environment = marker_environment(args.python_version, args.platform)
    reqs = [r for r in map(_packaging().requirements.Requirement, requires)
            if r.marker is None or r.marker.evaluate(dict(environment,
                                                          extra=''))]
    requirements = [str(r) for r in reqs if normalize(r.name) not in ASSUMED]
    if 'mmengine' in {normalize(r.name) for r in reqs}:
        requirements.append(MMENGINE)  # the version CI tests
    requirements += CHECK_REQUIREMENTS
    resolved = resolve(requirements, target)
    if args.bare:
        resolved = [(n, v) for n, v in resolved
                    if normalize(n) not in IMAGE]
    pins = [f'{n}=={v}' for n, v in resolved]
    if pins:
        _pip(['download', '--no-deps', '--only-binary=:all:', '-d', out,
              *target, *pins])
    keep = {(normalize(n), v) for n, v in resolved} | {
        (normalize(n), v) for n, v, _ in [wheel_metadata(mmsa)]}
    wheels = []
    for name in sorted(os.listdir(out)):
        path = osp.join(out, name)
        if not name.endswith('.whl'):
            continue
        project, version, _ = wheel_metadata(path)
        if (normalize(project), version) in keep:
            wheels.append(path)
        else:
            os.remove(path)  # another version, from an earlier run
    provided = set(ASSUMED) | (set(IMAGE) if args.bare else set())
    unmet = unmet_requirements(wheels, provided, environment)
    if unmet:
        raise SystemExit('wheelhouse: requirements no wheel in '
                         f'{out} meets:\n  ' + '\n  '.join(unmet))
    size = sum(osp.getsize(w) for w in wheels) / 2**20
    print(f'wheelhouse: {len(wheels)} wheels, {size:.1f} MiB in {out}')
    for path in wheels:
        print(f'  {osp.basename(path)}')
    if args.bare:
        print(f'install: pip install --no-index --no-deps --target T '
              f'{out}/*.whl (or tools/gpu_check.py --wheelhouse {out})')
    else:
        print(f'install: pip install --no-index --find-links {out} mmsa')
    return wheels


if __name__ == '__main__':
    main()
