"""tools/setup_env.sh: idempotent, and clear when a step fails."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'tools' / 'setup_env.sh'
VENV = Path(sys.prefix)


def run(*args, env=None, timeout=600):
    return subprocess.run(['bash', str(SCRIPT), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_second_run_is_a_no_op():
    """An up-to-date environment is left alone: no pip step runs (what
    makes a second run take seconds; time itself belongs in benchmarks)."""
    if not (VENV / '.mmsa-setup-stamp').exists():
        import pytest
        pytest.skip('tests are not running inside a setup_env.sh venv')
    logs = sorted((VENV / 'setup-logs').glob('*.log'))
    before = {p: p.stat().st_mtime_ns for p in logs}
    result = run(str(VENV))
    assert result.returncode == 0, result.stderr
    assert 'is up to date' in result.stdout
    assert 'pip' not in result.stdout and '/5' not in result.stdout
    assert {p: p.stat().st_mtime_ns for p in logs} == before


def test_missing_python_fails_with_one_clear_message(tmp_path):
    result = run(str(tmp_path / 'venv'), env=dict(PYTHON='python9.9'))
    assert result.returncode == 1
    assert "FAILED: no 'python9.9' on PATH" in result.stderr
    assert 'fix: install Python 3.11 or set PYTHON=' in result.stderr
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'venv').exists()
