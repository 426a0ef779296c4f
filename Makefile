# `make demo` runs the Django example portal on SQLite against the Watcher emulator.
# `make test` runs lint, types and the whole test suite (what CI runs).
# `make bench` writes benchmarks/RESULTS.md (10 to 25 minutes, more on a busy machine).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo demo-flask bench lint clean

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

demo: $(STAMP)
	$(BIN)/python example_projects/run_demo.py django

demo-flask: $(STAMP)
	$(BIN)/python example_projects/run_demo.py flask

# The peers the benchmarks compare with (Authlib, requests-oauthlib) come with the bench extra.
$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[all,test,bench]"
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) test-artifacts
