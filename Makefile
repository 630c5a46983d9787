# trainer — every target installs what it needs into .venv first.
#   make demo   the whole pipeline on the offline tiny model (CPU, a few minutes)
#   make test   lint + the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/training/default.yaml
DEBUG_CONFIG := configs/training/debug.yaml
TORCH_VERSION := $(shell sed -n 's/^torch==//p' requirements.lock)
# Extra pip options for torch alone, e.g. TORCH_PIP_ARGS="--index-url <a CPU-only wheel index>" on a laptop.
TORCH_PIP_ARGS ?=
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.PHONY: setup install dev synthesize train train-debug evaluate export pipeline demo test bench lint format lock clean

setup: $(BIN)/python

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(VENV)/.installed

# torch first and alone, so the pinned version comes from the local CPU build where one lies on disk.
$(VENV)/.installed: $(BIN)/python pyproject.toml requirements.lock
	$(PIP) $(TORCH_PIP_ARGS) "torch==$(TORCH_VERSION)"
	$(PIP) -c requirements.lock -e .
	touch $@

dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -c requirements.lock -e ".[dev]"
	touch $@

synthesize: install
	$(BIN)/trainer synthesize --config $(CONFIG)

train: install
	$(BIN)/trainer train --config $(CONFIG)

train-debug: install
	$(OFFLINE) $(BIN)/trainer train --config $(DEBUG_CONFIG)

evaluate: install
	$(BIN)/trainer evaluate --config $(CONFIG)

export: install
	$(BIN)/trainer export --config $(CONFIG)

pipeline: install
	$(BIN)/trainer pipeline --config $(CONFIG)

demo: install
	$(OFFLINE) $(BIN)/trainer pipeline --config $(DEBUG_CONFIG) --set training.resume=never

test: dev lint
	$(OFFLINE) $(BIN)/pytest -q

# Benchmarks: each appends a dated section of ratios (ours / baseline, same run) to docs/benchmarks.md.
bench: dev
	$(OFFLINE) $(BIN)/python benchmarks/export_merge.py --report docs/benchmarks.md
	$(OFFLINE) $(BIN)/python benchmarks/preemption.py --report docs/benchmarks.md

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: dev
	{ sed -n '1,2p' requirements.lock; $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf outputs data/processed .pytest_cache .ruff_cache
