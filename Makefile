# All set-up happens here: a fresh machine needs only Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
OUT ?= out/demo

.PHONY: demo test bench install dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev-installed

demo: $(VENV)/.installed
	$(BIN)/python -m neurorecon.demo --out $(OUT)

test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -n 2 src tests

bench: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/bench_read_check.py --out docs/benchmarks.md

clean:
	rm -rf $(VENV) out .pytest_cache
