#!/usr/bin/env bash
# Create (or update) the project's virtual environment with the pinned stack.
#
#   tools/setup_env.sh [VENV_DIR]      default: .venv
#
# Idempotent: a second run with unchanged requirement files returns in
# seconds (stamp file), and even a fresh venv on the same machine reuses
# pip's wheel cache for the mmcv build.  Never pass --no-cache-dir here.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv}"
PY_BOOT="${PYTHON:-python3}"
STAMP="$VENV/.mmsa-setup-stamp"
LOG_DIR="$VENV/setup-logs"

step_no=0
say() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() {
    printf '\n[setup] FAILED: %s\n' "$1" >&2
    [[ -n "${2:-}" ]] && printf '[setup] fix: %s\n' "$2" >&2
    [[ -n "${3:-}" && -f "$3" ]] && {
        printf '[setup] last lines of %s:\n' "$3" >&2
        tail -n 25 "$3" >&2
    }
    exit 1
}
# Run a pip step with its full output in a log file; show only the tail on
# failure instead of a 500-line traceback.
pip_step() {
    local name="$1" hint="$2"
    shift 2
    step_no=$((step_no + 1))
    local log="$LOG_DIR/$(printf '%02d' "$step_no")-$name.log"
    local t0=$SECONDS
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check \
        "$@" >"$log" 2>&1; then
        fail "step '$name' (pip install $*)" "$hint" "$log"
    fi
    say "  $name done in $((SECONDS - t0))s (log: ${log#"$ROOT"/})"
}

stamp_key() {
    # compat.txt belongs to the other environment (setup_compat_env.sh)
    local reqs
    reqs=$(ls "$ROOT"/requirements/*.txt | grep -v '/compat\.txt$')
    # shellcheck disable=SC2086  # one path a line, no spaces in them
    cat $reqs "$ROOT/setup.py" "$0" | sha256sum | cut -d' ' -f1
}

# mmdet/mmseg's model packages import more than `import mmdet` does, and
# mmsa must see both frameworks.
IMPORT_CHECK='import mmcv.ops, mmdet.models, mmseg.models, mmsa
assert all(mmsa.models.AVAILABLE.values()), mmsa.models.AVAILABLE'

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_key)" ]] &&
    "$VENV/bin/python" -c "$IMPORT_CHECK" 2>/dev/null; then
    say "environment $VENV is up to date (delete $STAMP to force a re-check)"
    exit 0
fi

T_START=$SECONDS
command -v "$PY_BOOT" >/dev/null || fail "no '$PY_BOOT' on PATH" \
    "install Python 3.11 or set PYTHON=/path/to/python3.11"
PYV="$("$PY_BOOT" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$PYV" == "3.11" ]] || say "warning: tested with Python 3.11, found $PYV"

if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating virtual environment $VENV"
    "$PY_BOOT" -m venv "$VENV" || fail "python -m venv $VENV" \
        "install the venv module (Debian: apt-get install python3-venv)"
fi
mkdir -p "$LOG_DIR"

say "1/5 build tools (setuptools<81 keeps pkg_resources; ninja)"
pip_step build-tools "check network access to PyPI" -U pip \
    -r "$ROOT/requirements/build.txt"

if "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    say "2/5 torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') already installed: kept"
else
    say "2/5 torch 2.13.0 (local CPU wheel where available)"
    pip_step torch "a CUDA box: install your torch first, then rerun" \
        -r "$ROOT/requirements/torch.txt"
fi

say "3/5 mmengine and mmcv's pure-python dependencies"
pip_step mmengine "check network access to PyPI" mmengine==0.10.7 \
    addict packaging Pillow pyyaml yapf opencv-python

if "$VENV/bin/python" -c 'import mmcv, mmcv.ops; assert mmcv.__version__ == "2.1.0"' \
    2>/dev/null; then
    say "4/5 mmcv 2.1.0 with ops already installed"
else
    say "4/5 mmcv 2.1.0 with ops (MMCV_WITH_OPS=1). First build compiles 77 C++"
    say "    units: about 17 minutes on 2 cores; later runs reuse pip's wheel"
    say "    cache and take seconds. Progress: tail -f $LOG_DIR/*mmcv*.log"
    MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" pip_step mmcv \
        "needs gcc/g++, Python headers and setuptools<81 (pkg_resources); see docs/faq.md" \
        --no-build-isolation mmcv==2.1.0
fi

say "5/5 mmdet 3.3.0, mmsegmentation 1.2.2, tests, mmsa (editable)"
pip_step mm-and-mmsa "mmdet/mmseg need mmcv<2.2; see docs/faq.md" \
    -r "$ROOT/requirements/mminstall.txt" -r "$ROOT/requirements/runtime.txt" \
    -r "$ROOT/requirements/tests.txt" -e "$ROOT[tests]"
# Again without build isolation, so that setup.py sees torch and compiles the
# fused SA kernel (about 1.5 minutes on 2 cores). A failed compile is not an
# error: SA then runs its reference path and logs why.
say "    fused SA kernel (C++, optional)"
pip_step mmsa-kernel "see the log; SA falls back to its reference path" \
    --no-build-isolation --no-deps -e "$ROOT"

"$VENV/bin/python" -c "$IMPORT_CHECK" >"$LOG_DIR/import-check.log" 2>&1 ||
    fail "import check (mmcv.ops, mmdet.models, mmseg.models, mmsa)" \
        "see the log above; a missing module means a dependency to add" \
        "$LOG_DIR/import-check.log"
"$VENV/bin/python" -c 'from mmsa.ops import cpu_kernel_isa as isa
print("SA CPU kernel:", "built (%s)" % isa() if isa() else "not built")' ||
    true
stamp_key >"$STAMP"
say "environment ready in $((SECONDS - T_START))s: $VENV"
