# Each target sets up .venv on first use (or when pyproject.toml changes), then runs.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/reasonjax replicate coverage

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 -q --durations=15 tests

# The benchmarks also need the bench extra (TRL, for benchmarks/rl_step.py).
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(VENV)/bin/python -m pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	for f in benchmarks/*.py; do $(VENV)/bin/python $$f || exit 1; done
