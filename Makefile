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

# Needs only a Python with torch (an offline CUDA machine has no .venv).
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
WHEELHOUSE ?= wheelhouse
WHEELHOUSE_ARGS ?=

.PHONY: setup setup-compat demo test test-compat test-fast clean-venv \
	wheelhouse

setup:
	@bash tools/setup_env.sh $(VENV)

setup-compat:
	@bash tools/setup_compat_env.sh $(COMPAT_VENV)

demo: setup
	@$(PY) tools/demo.py

# Everything, including the end-to-end runs marked `slow` (CI runs this),
# then test-compat. pytest exit 5 (no tests collected) is an error, not a
# pass; the compatibility run goes ahead even when the main one failed.
test: setup
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	    echo 'make test: pytest collected no tests (exit 5): failing' >&2; \
	fi; \
	$(MAKE) --no-print-directory test-compat PYTEST_ARGS='$(PYTEST_ARGS)'; \
	crc=$$?; [ $$rc -eq 0 ] && rc=$$crc; exit $$rc

# COMPAT_TESTS on the oldest supported stack, the checkout on PYTHONPATH.
test-compat: setup-compat
	@PYTHONPATH='$(CURDIR)' $(COMPAT_VENV)/bin/python -m pytest \
	    -p no:cacheprovider $(COMPAT_TESTS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	    echo 'make test-compat: no tests collected (exit 5): failing' >&2; \
	fi; exit $$rc

test-fast: setup
	@$(PY) -m pytest -m 'not slow' $(PYTEST_ARGS)

# Wheels for an offline machine that has torch (README: Install on an
# offline node), e.g. WHEELHOUSE_ARGS='--python-version 3.12 --platform
# manylinux_2_28_x86_64'.
wheelhouse:
	@$(GPU_PY) tools/wheelhouse.py $(WHEELHOUSE) $(WHEELHOUSE_ARGS)

clean-venv:
	rm -rf $(VENV) $(COMPAT_VENV)
