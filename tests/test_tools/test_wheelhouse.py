"""tools/wheelhouse.py: the wheels for an offline machine that has torch.

What needs PyPI (resolving and downloading mmengine's closure) runs in
``make gpu-check-dry``; here the parts that run offline.
"""
import re
import zipfile

import pytest
from testing_utils import load_tool


def _tool():
    return load_tool('tools/wheelhouse.py')


def test_a_manylinux_platform_takes_the_older_ones_too():
    wh = _tool()
    tags = wh.platform_tags(['manylinux_2_28_x86_64'])
    assert tags[0] == 'manylinux_2_28_x86_64'
    for older in ('manylinux_2_27_x86_64', 'manylinux_2_17_x86_64',
                  'manylinux2014_x86_64', 'manylinux2010_x86_64',
                  'manylinux1_x86_64'):
        assert older in tags
    assert 'manylinux_2_29_x86_64' not in tags
    legacy = wh.platform_tags(['manylinux2014_aarch64'])
    assert 'manylinux_2_17_aarch64' in legacy
    assert 'manylinux_2_18_aarch64' not in legacy
    assert wh.platform_tags(['win_amd64']) == ['win_amd64']
    assert wh.target_args('3.12', []) == ['--python-version', '3.12',
                                          '--implementation', 'cp']
    assert wh.target_args(None, []) == []


def test_markers_are_evaluated_for_the_target():
    env = _tool().marker_environment('3.12', ['manylinux_2_28_x86_64'])
    assert env['python_version'] == '3.12'
    assert env['sys_platform'] == 'linux'
    assert env['platform_machine'] == 'x86_64'
    assert _tool().marker_environment(None, ['win_amd64'])[
        'sys_platform'] == 'win32'


def _wheel(folder, name, version, requires=()):
    path = folder / f'{name}-{version}-py3-none-any.whl'
    meta = '\n'.join(['Metadata-Version: 2.1', f'Name: {name}',
                      f'Version: {version}'] +
                     [f'Requires-Dist: {r}' for r in requires]) + '\n\n'
    with zipfile.ZipFile(path, 'w') as whl:
        whl.writestr(f'{name}-{version}.dist-info/METADATA', meta)
    return str(path)


def test_unmet_requirements_name_the_wheel_and_the_requirement(tmp_path):
    wh = _tool()
    wheels = [
        _wheel(tmp_path, 'app', '1.0', [
            'lib>=2', 'torch>=2.1', 'tomli; python_version < "3.11"',
            'docs-only; extra == "docs"', 'winlib; sys_platform == "win32"']),
        _wheel(tmp_path, 'lib', '1.5', ['Dep_Name']),
        _wheel(tmp_path, 'dep.name', '0.1'),
    ]
    env = wh.marker_environment('3.12', ['manylinux_2_28_x86_64'])
    # lib 1.5 is too old; torch is the machine's; the rest do not apply
    assert wh.unmet_requirements(wheels, ['torch'], env) == [
        'app-1.0-py3-none-any.whl: lib>=2']
    assert wh.unmet_requirements(wheels[1:], [], env) == []
    # for Python 3.10, tomli is needed too
    old = wh.marker_environment('3.10', ['manylinux_2_28_x86_64'])
    assert 'app-1.0-py3-none-any.whl: tomli; python_version < "3.11"' in \
        wh.unmet_requirements(wheels, ['torch'], old)


def test_mmsa_wheel_is_pure_python_without_the_cpu_kernel(tmp_path):
    """Built offline from a copy of the sources (a kernel compiled in place
    stays out); an older mmsa wheel in the folder is replaced."""
    wh = _tool()
    (tmp_path / 'mmsa-0.0.1-py3-none-any.whl').write_bytes(b'old')
    path = wh.build_mmsa(str(tmp_path))
    assert path.endswith('-py3-none-any.whl')
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        path.rsplit('/', 1)[1]]
    with zipfile.ZipFile(path) as whl:
        names = whl.namelist()
    assert 'mmsa/ops/block_end_triton.py' in names
    assert not [n for n in names if n.endswith(('.so', '.pyd', '.pyc'))]
    name, _, requires = wh.wheel_metadata(path)
    assert name == 'mmsa'
    assert {re.split(r'[<>=!~; ]', r)[0] for r in requires
            if 'extra ==' not in r} == {'torch', 'numpy', 'mmengine'}


def test_a_bad_python_version_is_one_clear_error(capsys):
    with pytest.raises(SystemExit):
        _tool().parse_args(['out', '--python-version', '312'])
    assert 'give MAJOR.MINOR, e.g. 3.12' in capsys.readouterr().err
