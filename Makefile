# Riverbed: `make run` brings the platform up; `make test` runs every test.
# Both set up what they need and are safe to run again.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# dagster-dbt reads dbt's manifest; it is prepared here, at build time, never at import.
DBT_MANIFEST := dbt/target/manifest.json
DBT_SOURCES  := $(shell find dbt -name '*.sql' -o -name '*.yml' | grep -v -e '^dbt/target/' -e '^dbt/logs/')

.PHONY: setup browser prometheus run test lint bench clean

setup: $(STAMP) $(DBT_MANIFEST)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

$(DBT_MANIFEST): $(STAMP) $(DBT_SOURCES)
	$(VENV)/bin/dbt parse --project-dir dbt --profiles-dir dbt --quiet
	@touch $@

# Debian's packages, with apt-get: Chromium for the tests that open pages headless, and
# Prometheus, which `make run` starts and whose promtool the tests check metrics with.
browser:
	@command -v chromium >/dev/null || { \
		echo "installing Debian's chromium"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
		echo "installing Debian's prometheus"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }

run: setup prometheus
	$(PY) -m orchestration.platform

# The test session starts its own brokers (ports 19092 and 19192, .riverbed-test/gw0
# and gw1) and stops them at the end, also when a test fails or the run is interrupted.
# Two workers: most of a Kafka test's time is waiting (for flushes, sensor ticks, a
# broker), so two of them share the two cores well; a file's tests stay on one worker,
# and all the three-node cluster tests on one (tests/conftest.py).
# --durations: every run shows where the suite's time goes (it must stay well under 20 min).
test: setup browser prometheus
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 --durations=25

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf .riverbed .riverbed-test dbt/target
