# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pip's noise about unreadable extra index locations is not ours to fix.
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

venv: $(BIN)/.installed  ## create .venv: CPU torch 2.13.0 first, then layerpilot with dev extras

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	# torch first and pinned: unpinned, pip resolves a CUDA build of several GB.
	$(BIN)/python -m pip install -q torch==2.13.0 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]" 2>&1 | $(QUIET_PIP)
	$(BIN)/python -c "import torch, trl, transformers; print('torch', torch.__version__, 'trl', trl.__version__, 'transformers', transformers.__version__)"
	touch $@

test: venv  ## run the whole test suite (heavy cases included)
	$(BIN)/pytest --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test-fast: venv  ## the suite without the heavy cases
	$(BIN)/pytest -m "not heavy"

demo: venv  ## probe -> train -> register on the shipped demo model (local MLflow store in layerpilot-demo/)
	$(BIN)/layerpilot demo --workdir layerpilot-demo
	@echo "(the commands above live in $(VENV): run 'source $(VENV)/bin/activate' first)"

lint: venv  ## ruff, mypy (strict on service/), import-linter
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo-model: venv  ## rebuild the shipped demo model and builtin:arith data from their seed
	$(BIN)/python tools/build_demo_model.py

clean:
	rm -rf layerpilot-demo layerpilot-train layerpilot-probe layerpilot-adapt layerpilot-validate \
		mlflow.db mlartifacts .pytest_cache .mypy_cache .ruff_cache

.PHONY: help venv test test-fast demo lint format demo-model clean
