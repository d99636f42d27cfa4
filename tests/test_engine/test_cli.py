"""tools/*.py end in one line for mmsa's own errors only."""
import json

import pytest

from mmsa.engine.cli import run_cli
from mmsa.errors import ConfigError


def _end_of(main, work_dir, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli(main, lambda: str(work_dir))
    return exit_.value.code, capsys.readouterr().err.splitlines()


def test_mmsa_error_is_one_line_and_recorded(tmp_path, capsys):
    def main():
        raise ConfigError("attention_blocks='last' is set but attention is "
                          'None, ...')

    code, err = _end_of(main, tmp_path, capsys)
    assert code == 1
    assert err == ["error: ConfigError: attention_blocks='last' is set but "
                   'attention is None, ...',
                   '(set MMSA_DEBUG=1 for the traceback)']
    failed = json.loads((tmp_path / 'failed.json').read_text())
    assert failed['error'] == 'ConfigError'
    assert 'Traceback' in failed['traceback']


@pytest.mark.parametrize('bug', [KeyError('backbone'), TypeError('x'),
                                 ValueError('y'), RuntimeError('z')])
def test_any_other_error_keeps_its_traceback_whatever_its_type(
        bug, tmp_path, capsys):
    """A KeyError inside a constructor is a bug, not a config mistake."""
    def main():
        raise bug

    with pytest.raises(type(bug)) as err:
        run_cli(main, lambda: str(tmp_path))
    assert err.value is bug
    assert 'error:' not in capsys.readouterr().err
    # the work dir says the run failed, with where
    failed = json.loads((tmp_path / 'failed.json').read_text())
    assert failed['error'] == type(bug).__name__
    assert 'raise bug' in failed['traceback']


def test_mmsa_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv('MMSA_DEBUG', '1')

    def main():
        raise ConfigError('bad')

    with pytest.raises(ConfigError):
        run_cli(main, lambda: str(tmp_path))
