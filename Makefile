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

# --dist loadscope: each test module on one worker, so a module's fixtures (recipe micro
# runs) are built once, not once per worker. Fresh clones on the shared 2-core machine:
# 17:31 and 21:26 with it, 18:30 without; the noise is larger than any gain measured.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --dist loadscope -q --durations=15 tests

# The benchmarks also need the bench extra (TRL, for benchmarks/rl_step.py).
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(VENV)/bin/python -m pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Each comparison writes its JSON to benchmarks/results; summary.py prints the README table.
bench: $(BENCH_STAMP)
	mkdir -p benchmarks/results
	$(VENV)/bin/python benchmarks/decode_throughput.py --json benchmarks/results/decode.json
	$(VENV)/bin/python benchmarks/search_throughput.py --json benchmarks/results/search.json
	$(VENV)/bin/python benchmarks/train_step.py --json benchmarks/results/train_step.json
	$(VENV)/bin/python benchmarks/rl_step.py --json benchmarks/results/rl_step.json
	$(VENV)/bin/python benchmarks/arithmetic_rl.py
	$(VENV)/bin/python benchmarks/summary.py benchmarks/results
