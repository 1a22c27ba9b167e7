# Set-up is part of every target: the venv is created and completed on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CPU build of torch is pinned first so that no multi-GB CUDA build is pulled in.
TORCH  ?= torch==2.13.0

.PHONY: setup run lint test test-fast test-slow bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test,rl,flows]"
	touch $(STAMP)

# The main job: Table 5.1 smoke sweep on the embedded digits, then its report.
run: setup
	$(BIN)/gensweep run cmnist-table --preset smoke
	$(BIN)/gensweep report cmnist-table

# ruff as a linter only (never `ruff format`: the mutation scripts anchor on exact source text).
lint: setup
	$(BIN)/ruff check core tasks pipelines tests benchmarks

test: setup
	$(BIN)/python -m pytest

# The inner loop: everything but the tests that drive a real Ray sweep (marked e2e).
test-fast: setup
	$(BIN)/python -m pytest -m "not e2e"

test-slow: setup
	$(BIN)/python -m pytest -m slow

bench: setup
	$(BIN)/python benchmarks/cmnist_step.py

clean:
	rm -rf $(VENV) results
