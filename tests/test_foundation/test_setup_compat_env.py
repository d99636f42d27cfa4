"""tools/setup_compat_env.sh: idempotent, and clear when a step fails."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'tools' / 'setup_compat_env.sh'
VENV = ROOT / '.venv-torch21'  # the Makefile's COMPAT_VENV


def run(*args, env=None, timeout=600):
    return subprocess.run(['bash', str(SCRIPT), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_second_run_is_a_no_op():
    if not (VENV / '.mmsa-setup-stamp').exists():
        pytest.skip(f'{VENV} was not set up (make setup-compat)')
    result = run(str(VENV))
    assert result.returncode == 0, result.stderr
    assert 'is up to date' in result.stdout
    assert 'installing' not in result.stdout


def test_missing_python_fails_with_one_clear_message(tmp_path):
    result = run(str(tmp_path / 'venv'), env=dict(PYTHON='python9.9'))
    assert result.returncode == 1
    assert "FAILED: no 'python9.9' on PATH" in result.stderr
    assert 'fix: install Python 3.11 or set PYTHON=' in result.stderr
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'venv').exists()
