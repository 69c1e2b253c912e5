# detflow — the two commands a newcomer needs:  make repro   and   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
STAMP := $(VENV)/.installed-$(shell cat constraints.txt pyproject.toml 2>/dev/null | sha256sum | cut -c1-12)
PYTEST_ARGS ?=
# pytest-xdist: one worker per core; a module's tests (and all tests of the shared tiny DVC
# repository) stay on one worker (tests/conftest.py's scheduler). XDIST= runs in one process.
# A crashed worker is replaced once: the scheduler gives the new worker the crashed module
# again, test included, and with xdist's default (4 restarts per worker) a crash that
# repeats ran that module 9 times, each with its setup (the tiny repository's: minutes).
XDIST ?= -n auto --max-worker-restart=1

.PHONY: help install weights params docs repro serve test test-fast lint format lock

help:
	@echo "make repro   create $(VENV), install pinned deps, fetch offline weights, run dvc repro"
	@echo "make test    install dev extras if missing, run the whole test suite"
	@echo "make serve   HTTP API on models/deploy at http://127.0.0.1:8000 (SERVE_ARGS=...)"
	@echo "make params  regenerate params.yaml from conf/ (as dvc exp run does)"
	@echo "make docs    rewrite the figures README.md and docs/*.md quote from reports/ (docs/figures.py)"
	@echo "make lint    ruff check + format check + import contracts;  make lock  re-pin constraints.txt"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Pinned install: constraints.txt fixes every version (torch and torchvision from the
# registry, built together). The stamp changes when constraints or pyproject change.
# Extras (pyproject.toml): pipeline (torch, DVC, Hydra …), serve (HTTP API), dev (tests, lint);
# the base alone is the ONNX Runtime path, and `pip install ".[serve]"` serves without torch.
# INSTALLER=uv (default): uv installs the same pins, downloading and unpacking in parallel
# (cold cache here: 21 s against pip's 88 s, docs/benchmarks.md); it reads no pip.conf, so
# pip's configured indexes are passed on, and like pip it takes each pin from any of them.
# INSTALLER=pip installs with pip alone. uv, unlike pip, compiles no bytecode unless told:
# --compile-bytecode writes every .pyc once at install, so that the stages, dvc and the tests'
# subprocesses do not recompile torch & co. from source at each start where
# PYTHONDONTWRITEBYTECODE is set (a fresh clone's suite: 851 s without, docs/benchmarks.md).
INSTALLER ?= uv
PIP_SOURCES = $(shell $(BIN)/python -m pip config list 2>/dev/null \
	| sed -nE "s/^[^.]*\.(index-url|extra-index-url|find-links)='(.*)'$$/\1 \2/p" \
	| awk '{for (i = 2; i <= NF; i++) print "--" $$1 " " $$i}' | sort -u)
$(STAMP): | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
ifeq ($(INSTALLER),uv)
	$(BIN)/python -m pip install --quiet -c constraints.txt uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python $(PIP_SOURCES) \
		--index-strategy unsafe-best-match --compile-bytecode -c constraints.txt \
		-e ".[pipeline,serve,dev]"
else
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[pipeline,serve,dev]"
endif
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

weights: $(STAMP)
	$(BIN)/detflow weights

params: $(STAMP)
	$(BIN)/python stages/compose_params.py

# The figures README.md and docs/*.md quote (<!-- fig FILE KEY FORMAT --> markers) from the
# committed reports and bench/results.json; run after dvc repro. tests/test_doc_figures.py
# fails on a stale one.
docs: $(STAMP)
	$(BIN)/python docs/figures.py

repro: $(STAMP) weights
	$(BIN)/dvc repro

# The deploy model behind the HTTP API (docs/deployment.md#serve); needs `make repro` first.
SERVE_ARGS ?=
serve: $(STAMP)
	$(BIN)/detflow serve --model models/deploy $(SERVE_ARGS)

test: $(STAMP) weights
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src stages tests bench
	$(BIN)/ruff format --check src stages tests bench
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format src stages tests bench
	$(BIN)/ruff check --fix src stages tests bench

lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt
