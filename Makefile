# `make demo` runs the Django example portal on SQLite against the Watcher emulator;
# ARGS go to the launcher: `make demo ARGS="--port 9000"` (`--help` lists them).
# `make test` runs lint, types, the whole test suite on this Python, and the Django suite on the
# matrix's corners (what CI runs). `make matrix` runs every supported Python x Django pair.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test matrix demo demo-flask bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[all,test]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	sh scripts/ensure_chromium.sh
	$(BIN)/python -m pytest
	$(BIN)/nox -t corners -- tests/django

matrix: $(STAMP)
	$(BIN)/nox -s tests

demo: $(STAMP)
	$(BIN)/python example_projects/run_demo.py django $(ARGS)

demo-flask: $(STAMP)
	$(BIN)/python example_projects/run_demo.py flask $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/chaos.py

clean:
	rm -rf $(VENV) .nox test-artifacts
