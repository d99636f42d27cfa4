# Two commands for newcomers: `make demo` and `make test`.
# Both create .venv with the pinned stack first when it is missing
# (tools/setup_env.sh; ~20 min the first time for the mmcv compile,
# seconds afterwards).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# The oldest stack mmsa supports (requirements/compat.txt: torch 2.1.2,
# numpy 1.26.4, opencv 4.11, mmengine 0.10.7; no mmcv, mmdet or mmseg).
COMPAT_VENV ?= .venv-torch21
# What runs without mmcv; tests in them that need mmdet/mmseg/mmcv skip.
# Triton 2.1's interpreter cannot run CPU tensors: there the kernels are
# checked by test_triton_compile (lowered to TTIR), not by the interpreter.
COMPAT_TESTS ?= tests/test_attention tests/test_ops tests/test_converters \
	tests/test_utils tests/test_foundation/test_setup_compat_env.py \
	tests/test_deploy --ignore=tests/test_ops/test_triton_kernels.py

# The GPU check (tools/gpu_check.py, docs/gpu_check.md) needs only a Python
# with torch: a CUDA machine has no .venv, so no setup step. Without CUDA it
# runs its dry run; CI runs that dry run in `make test` (gpu-check-dry).
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_CHECK_ARGS ?=
WHEELHOUSE ?= wheelhouse
WHEELHOUSE_ARGS ?=

.PHONY: setup setup-compat demo test test-compat test-fast clean-venv \
	gpu-check gpu-check-dry wheelhouse

setup:
	@bash tools/setup_env.sh $(VENV)

setup-compat:
	@bash tools/setup_compat_env.sh $(COMPAT_VENV)

demo: setup
	@$(PY) tools/demo.py

# Everything, including the end-to-end runs marked `slow` (CI runs this),
# then test-compat, then the GPU check's dry run. pytest exit 5 (no tests
# collected) is an error, not a pass; each later run goes ahead even when
# an earlier one failed.
test: setup
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	    echo 'make test: pytest collected no tests (exit 5): failing' >&2; \
	fi; \
	$(MAKE) --no-print-directory test-compat PYTEST_ARGS='$(PYTEST_ARGS)'; \
	crc=$$?; [ $$rc -eq 0 ] && rc=$$crc; \
	$(MAKE) --no-print-directory gpu-check-dry; \
	grc=$$?; [ $$rc -eq 0 ] && rc=$$grc; exit $$rc

# COMPAT_TESTS on the oldest supported stack, the checkout on PYTHONPATH.
test-compat: setup-compat
	@PYTHONPATH='$(CURDIR)' $(COMPAT_VENV)/bin/python -m pytest \
	    -p no:cacheprovider $(COMPAT_TESTS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	    echo 'make test-compat: no tests collected (exit 5): failing' >&2; \
	fi; exit $$rc

test-fast: setup
	@$(PY) -m pytest -m 'not slow' $(PYTEST_ARGS)

# On a CUDA machine: the CUDA tests and the benchmark in parts, <= 9 min on
# one H100; results in work_dirs/gpu_check. E.g. GPU_CHECK_ARGS='--wheelhouse
# DIR' (wheels from `make wheelhouse WHEELHOUSE_ARGS=--bare`).
gpu-check:
	@$(GPU_PY) tools/gpu_check.py $(GPU_CHECK_ARGS)

# The dry run CI executes: a bare wheelhouse (kept in the venv: pip fetches
# its ~1 MB once), installed into a fresh target and imported, the CUDA
# tests collected and skipped, the benchmark parts in quick CPU mode.
gpu-check-dry: setup
	@$(PY) tools/wheelhouse.py --bare $(VENV)/wheelhouse && \
	$(PY) tools/gpu_check.py --dry-run --wheelhouse $(VENV)/wheelhouse \
	    --out work_dirs/gpu_check_dry

# Wheels for an offline machine that has torch (docs/install.md: On an
# offline node), e.g. WHEELHOUSE_ARGS='--python-version 3.12 --platform
# manylinux_2_28_x86_64'.
wheelhouse:
	@$(GPU_PY) tools/wheelhouse.py $(WHEELHOUSE) $(WHEELHOUSE_ARGS)

clean-venv:
	rm -rf $(VENV) $(COMPAT_VENV)
