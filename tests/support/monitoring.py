"""Prometheus for tests: configured and started as `make run` does, with `riverbed
metrics` beside it, and queried through its HTTP API."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from riverbed import prometheus
from riverbed.settings import Settings
from tests.support.flow_harness import REPO

GRAFANA_DASHBOARD = prometheus.MONITORING_DIR / "grafana" / "riverbed.json"


@contextlib.contextmanager
def running_prometheus(settings: Settings, *, time_scale: float = 1) -> Iterator[Settings]:
    """Prometheus on ``settings.prometheus_port`` and the state exporter, until the end.

    ``time_scale``: see :func:`quicken` (1: the configuration as `make run` has it).
    """
    prometheus.prepare(settings)
    if time_scale != 1:
        quicken(settings, time_scale)
    server = subprocess.Popen(
        prometheus.command(settings), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    exporter = subprocess.Popen(
        [sys.executable, "-m", "riverbed.cli", "metrics"],
        env={**os.environ, **settings.to_env()},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield settings
    finally:
        for process in (exporter, server):
            process.send_signal(signal.SIGTERM)
            process.wait(30)


_DURATION = re.compile(
    r"^(\s*(?:scrape_interval|scrape_timeout|evaluation_interval|refresh_interval|for):\s*)"
    r"(\d+)(ms|s|m|h)\s*$",
    re.MULTILINE,
)
_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def quicken(settings: Settings, factor: float) -> None:
    """Run the prepared configuration on a clock ``factor`` times faster: every interval
    (scrapes, rule evaluation, target file reads) and every alerting rule's ``for`` of
    the files :func:`riverbed.prometheus.prepare` wrote is divided by ``factor``. The
    rules' expressions stay as they are; monitoring/ is not touched."""
    root = prometheus.home(settings)

    def scaled(match: re.Match[str]) -> str:
        ms = int(match.group(2)) * _MS[match.group(3)] / factor
        return f"{match.group(1)}{max(1, round(ms))}ms"

    for path in [root / "prometheus.yml", *sorted((root / "rules").glob("*.yml"))]:
        path.write_text(_DURATION.sub(scaled, path.read_text()))


def query(settings: Settings, promql: str) -> list[dict]:
    url = f"{prometheus.url(settings)}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())["data"]["result"]


def wait_for(settings: Settings, promql: str, timeout: float = 60) -> list[dict]:
    """The result of ``promql`` once it has one, polled every second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = query(settings, promql)
        except OSError:
            found = []  # not listening yet
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"Prometheus never had {promql} within {timeout:.0f} s")


def grafana_metrics() -> set[str]:
    """Every metric (or recorded series) a query of the Grafana dashboard reads."""
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    names = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            # Identifiers not followed by "(" (functions), outside {...} (labels) and
            # [...] (ranges).
            expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", target["expr"])
            names |= {
                m.group(1)
                for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?![\w(])", expr)
                if m.group(1) not in {"sum", "by", "rate", "time"}
            }
    return names


def firing(settings: Settings) -> set[str]:
    return {a["metric"]["alertname"] for a in query(settings, 'ALERTS{alertstate="firing"}')}


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def exposition(target: Path) -> str:
    """What the process a target file registered serves, as Prometheus scrapes it."""
    (entry,) = json.loads(target.read_text())
    with urllib.request.urlopen(f"http://{entry['targets'][0]}/metrics", timeout=5) as answer:
        return answer.read().decode()


def check_metrics(text: str) -> None:
    """Fail unless Prometheus's own ``promtool check metrics`` accepts ``text``."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: `make test` installs Debian's prometheus")
    checked = subprocess.run(
        [binary, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def scrape_target(target: Path) -> Samples:
    """Scrape the process a target file registered, as Prometheus would:
    (metric, sorted labels) to value."""
    return parse_samples(exposition(target))


def parse_samples(text: str) -> Samples:
    """Exposition text as (metric, sorted labels) to value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples that carry ``labels``."""
    return sum(
        v
        for (n, got), v in samples.items()
        if n == name and all((k, want) in got for k, want in labels.items())
    )
