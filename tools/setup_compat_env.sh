#!/usr/bin/env bash
# Create (or update) the lean compatibility environment: the oldest torch,
# numpy and opencv that mmsa supports (requirements/compat.txt), without
# mmcv, mmdet or mmseg. `make test-compat` runs the attention, ops,
# checkpoint, converter and ONNX tests in it with the checkout on PYTHONPATH.
#
#   tools/setup_compat_env.sh [VENV_DIR]     default: .venv-torch21
#
# Idempotent (stamp file): a second run with unchanged requirements returns
# in seconds. About 5 minutes the first time (torch 2.1.2 with its CUDA
# libraries, ~2.5 GB); pip's cache makes later fresh venvs faster, so never
# pass --no-cache-dir here.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-torch21}"
PY_BOOT="${PYTHON:-python3}"
STAMP="$VENV/.mmsa-setup-stamp"
LOG="$VENV/setup.log"

say() { printf '[setup-compat %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() {
    printf '\n[setup-compat] FAILED: %s\n' "$1" >&2
    [[ -n "${2:-}" ]] && printf '[setup-compat] fix: %s\n' "$2" >&2
    [[ -f "$LOG" ]] && {
        printf '[setup-compat] last lines of %s:\n' "$LOG" >&2
        tail -n 25 "$LOG" >&2
    }
    exit 1
}
stamp_key() {
    cat "$ROOT/requirements/compat.txt" "$0" | sha256sum | cut -d' ' -f1
}
# The checkout, not an installed copy, is what the tests import.
IMPORT_CHECK='import torch, numpy, cv2, mmengine, mmsa
print("torch", torch.__version__, "numpy", numpy.__version__,
      "opencv", cv2.__version__, "mmengine", mmengine.__version__)'

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_key)" ]] &&
    PYTHONPATH="$ROOT" "$VENV/bin/python" -c "$IMPORT_CHECK" >/dev/null 2>&1
then
    say "environment $VENV is up to date (delete $STAMP to force a re-check)"
    exit 0
fi

T_START=$SECONDS
command -v "$PY_BOOT" >/dev/null || fail "no '$PY_BOOT' on PATH" \
    "install Python 3.11 or set PYTHON=/path/to/python3.11"
if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating virtual environment $VENV"
    "$PY_BOOT" -m venv "$VENV" || fail "python -m venv $VENV" \
        "install the venv module (Debian: apt-get install python3-venv)"
fi
say "installing requirements/compat.txt (torch 2.1.2: about 5 minutes the"
say "    first time; progress: tail -f $LOG)"
"$VENV/bin/python" -m pip install --disable-pip-version-check \
    -r "$ROOT/requirements/compat.txt" >"$LOG" 2>&1 ||
    fail "pip install -r requirements/compat.txt" \
        "check network access to PyPI; see the log"
PYTHONPATH="$ROOT" "$VENV/bin/python" -c "$IMPORT_CHECK" >>"$LOG" 2>&1 ||
    fail "import check (torch, numpy, cv2, mmengine, mmsa)" \
        "see the log; mmsa must import on its oldest supported stack"
say "$(tail -n 1 "$LOG")"
stamp_key >"$STAMP"
say "environment ready in $((SECONDS - T_START))s: $VENV"
