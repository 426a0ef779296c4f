# `make demo` runs the Django example portal on SQLite against the Watcher emulator (`make
# demo-flask`, `make demo-fastapi`: the Flask portal, the async FastAPI service);
# ARGS go to the launcher: `make demo ARGS="--port 9000"` (`--help` lists them).
# `make test` runs lint, types, the whole test suite on this Python, and the Django suite on the
# matrix's corners (what CI runs). `make matrix` runs every supported Python x Django pair.
# `make bench` writes benchmarks/RESULTS.md (10 to 25 minutes, more on a busy machine).
# `make mutate` mutation-tests the core decision modules (not part of CI; ARGS go to
# scripts/mutate.py, e.g. ARGS="--module lifecycle"); benchmarks/MUTATION.md has the results.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test matrix demo demo-flask demo-fastapi bench lint clean mutate

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[all,test]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Playwright's sync API keeps an event loop running in the main thread until it stops, which
# breaks asyncio.run() in later tests: the browser tests get a pytest process of their own.
# The matrix corner (its own virtualenv and interpreter) runs beside them, mostly waiting on
# installs and sockets as they do, and its log is shown at the end; any failure fails the run.
test: lint
	sh scripts/ensure_chromium.sh
	mkdir -p test-artifacts
	$(BIN)/nox -t corners -- tests/django > test-artifacts/corners.log 2>&1 & corners=$$!; \
	$(BIN)/python -m pytest -m "not browser"; suite=$$?; \
	$(BIN)/python -m pytest -m browser; browser=$$?; \
	wait $$corners; corner=$$?; \
	echo "--- matrix corner (test-artifacts/corners.log) ---"; tail -n 15 test-artifacts/corners.log; \
	test $$suite -eq 0 && test $$browser -eq 0 && test $$corner -eq 0

matrix: $(STAMP)
	$(BIN)/nox -s tests

demo: $(STAMP)
	$(BIN)/python example_projects/run_demo.py django $(ARGS)

demo-flask: $(STAMP)
	$(BIN)/python example_projects/run_demo.py flask $(ARGS)

demo-fastapi: $(STAMP)
	$(BIN)/python example_projects/run_demo.py fastapi $(ARGS)

# The peers the benchmarks compare with (Authlib, requests-oauthlib) come with the bench extra.
$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[all,test,bench]"
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/chaos.py

mutate: $(STAMP)
	$(BIN)/python scripts/mutate.py $(ARGS)

clean:
	rm -rf $(VENV) .nox test-artifacts
