# Two commands for newcomers: `make demo` and `make test`.
# Both create .venv with the pinned stack first when it is missing
# (tools/setup_env.sh; ~20 min the first time for the mmcv compile,
# seconds afterwards).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast clean-venv

setup:
	@bash tools/setup_env.sh $(VENV)

demo: setup
	@$(PY) tools/demo.py

# Everything, including the end-to-end runs marked `slow` (CI runs this).
# pytest exit 5 (no tests collected) is an error, not a pass.
test: setup
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	    echo 'make test: pytest collected no tests (exit 5): failing' >&2; \
	fi; exit $$rc

test-fast: setup
	@$(PY) -m pytest -m 'not slow' $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
