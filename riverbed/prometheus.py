"""Riverbed's Prometheus server: its configuration in RIVERBED_HOME, its targets by file.

``make run`` starts Debian's ``prometheus`` (installed by the Makefile) on
127.0.0.1:``RIVERBED_PROMETHEUS_PORT`` with the files this module prepares::

    RIVERBED_HOME/prometheus/
      prometheus.yml         monitoring/prometheus.yml, as it is
      rules/*.yml            monitoring/rules/, thresholds filled in from the settings
      targets/<job>/*.json   one file per process that serves metrics (file discovery)
      data/                  the time series (two days)

Targets are files rather than static configuration because the processes come and
go with their own ports: each one that serves metrics registers itself
(:func:`register_target`) and removes its file when it stops, and Prometheus
re-reads the files within seconds. The local Kafka nodes are registered here.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from string import Template

from prometheus_client import CollectorRegistry, start_http_server

from riverbed.files import write_atomically
from riverbed.settings import Settings

MONITORING_DIR = Path(__file__).resolve().parents[1] / "monitoring"
CONFIG = MONITORING_DIR / "prometheus.yml"
RULES_DIR = MONITORING_DIR / "rules"
# The JMX exporter's rules for the Kafka nodes (riverbed.broker loads the agent).
JMX_EXPORTER_RULES = MONITORING_DIR / "jmx_exporter.yaml"
JOBS = ("kafka", "flows", "producer", "riverbed")
RETENTION = "2d"


class PrometheusError(RuntimeError):
    """Prometheus is missing or its configuration cannot be prepared; says what to do."""


def home(settings: Settings) -> Path:
    return settings.home / "prometheus"


def prepare(settings: Settings) -> Path:
    """Write the configuration, the rules and the Kafka nodes' targets; return the
    configuration file. Safe to call again: the files are rewritten from the settings."""
    root = home(settings)
    (root / "rules").mkdir(parents=True, exist_ok=True)
    for job in JOBS:
        (root / "targets" / job).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CONFIG, root / "prometheus.yml")
    thresholds = {
        "lag_threshold": str(settings.lag_threshold),
        "freshness_threshold_s": f"{settings.freshness_threshold_s:g}",
    }
    for rules in sorted(RULES_DIR.glob("*.yml")):
        # safe_substitute: Prometheus's own $labels and $value stay as they are.
        text = Template(rules.read_text()).safe_substitute(thresholds)
        write_atomically(root / "rules" / rules.name, text)
    if settings.manages_local_broker:
        from riverbed.broker import cluster_nodes

        targets = [
            {"targets": [f"127.0.0.1:{n.metrics_port}"], "labels": {"node": str(n.id)}}
            for n in cluster_nodes(settings)
        ]
        write_atomically(root / "targets" / "kafka" / "nodes.json", json.dumps(targets, indent=2))
    return root / "prometheus.yml"


def command(settings: Settings) -> list[str]:
    """The command that runs Prometheus on the prepared configuration."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusError(
            "prometheus not found: `make run` installs Debian's prometheus package "
            "(apt-get install prometheus)"
        )
    root = home(settings)
    return [
        binary,
        f"--config.file={root / 'prometheus.yml'}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
        # Debian's build defaults the console templates to /etc/prometheus: not ours.
        "--web.console.templates=",
        "--web.console.libraries=",
        "--log.level=warn",
    ]


def url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.prometheus_port}"


def register_target(
    settings: Settings, job: str, name: str, port: int, labels: dict[str, str] | None = None
) -> Path:
    """Tell Prometheus that 127.0.0.1:``port`` serves ``job``'s metrics; returns the file,
    which the caller removes (:func:`unregister_target`) when it stops serving."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}: one of {', '.join(JOBS)} (see {CONFIG.name})")
    path = home(settings) / "targets" / job / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"targets": [f"127.0.0.1:{port}"], "labels": labels or {}}
    write_atomically(path, json.dumps([entry]))
    return path


def unregister_target(path: Path) -> None:
    path.unlink(missing_ok=True)


@contextlib.contextmanager
def serving(
    settings: Settings,
    job: str,
    name: str,
    registry: CollectorRegistry,
    labels: dict[str, str] | None = None,
    port: int = 0,
) -> Iterator[int]:
    """Serve ``registry`` at http://127.0.0.1:<port>/metrics (``port`` 0: any free one)
    and register it with Prometheus, until the block ends; yields the port."""
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    target = register_target(settings, job, name, server.server_port, labels)
    try:
        yield server.server_port
    finally:
        unregister_target(target)
        server.shutdown()
        server.server_close()
        thread.join(5)
