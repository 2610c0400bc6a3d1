# Riverbed: `make run` brings the platform up; `make test` runs every test.
# Both set up what they need and are safe to run again.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup run test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

run: setup
	$(PY) -m riverbed.platform

# The test session starts its own broker (port 19092, .riverbed-test/) and
# stops it at the end, also when a test fails or the run is interrupted.
test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) -m bench.run

clean:
	rm -rf .riverbed .riverbed-test
