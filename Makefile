# Riverbed: `make run` brings the platform up; `make test` runs every test.
# Both set up what they need and are safe to run again.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# dagster-dbt reads dbt's manifest; it is prepared here, at build time, never at import.
DBT_MANIFEST := dbt/target/manifest.json
DBT_SOURCES  := $(shell find dbt -name '*.sql' -o -name '*.yml' | grep -v -e '^dbt/target/' -e '^dbt/logs/')

.PHONY: setup debian-packages run test lint bench clean

setup: $(STAMP) $(DBT_MANIFEST)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

$(DBT_MANIFEST): $(STAMP) $(DBT_SOURCES)
	$(VENV)/bin/dbt parse --project-dir dbt --profiles-dir dbt --quiet
	@touch $@

# Debian's packages: Chromium, for the test that opens the Dagster UI headless, and
# Prometheus, whose promtool checks every metric the platform exposes.
debian-packages:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian's$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

run: setup
	$(PY) -m orchestration.platform

# The test session starts its own broker (port 19092, .riverbed-test/) and
# stops it at the end, also when a test fails or the run is interrupted.
test: setup debian-packages
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf .riverbed .riverbed-test dbt/target
