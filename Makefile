# The two commands of the README, each of which sets up the environment on first use and reuses it after:
#
#   make quickstart    the default study on digits, then its report (results/quickstart/, reports/quickstart/)
#   make test          the whole test suite; make test PYTEST_ARGS='-m "not slow"' is the fast lane
#
# Set-up: .venv with the pinned torch and torchvision first, then study with its test extra (pip, not uv or
# poetry). A torch already in .venv is kept (GPU users install their own build first: README, "By hand"). The file
# .venv/.study-installed is written only after a successful install, so an interrupted one is redone on the
# next command, and it is redone when pyproject.toml changes.

PYTHON3 ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1
JOBS ?= 2
PYTEST_ARGS ?=

PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.study-installed

.PHONY: quickstart test lint env

quickstart: $(INSTALLED)
	$(PY) -m study.run grids/quickstart.yaml --jobs $(JOBS)
	$(PY) -m study.report grids/quickstart.yaml

test: $(INSTALLED)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

env: $(INSTALLED)

$(INSTALLED): pyproject.toml
	@rm -f $@
	@# A venv whose pip does not run (missing, or its creation was interrupted) is (re)created in place.
	$(PY) -m pip --version >/dev/null 2>&1 || $(PYTHON3) -m venv $(VENV)
	$(PY) -c "import torch, torchvision" >/dev/null 2>&1 || $(PY) -m pip install $(TORCH)
	$(PY) -m pip install -e ".[test]"
	@touch $@
