"""Which flows exist, what they read and write, and how Dagster deploys them.

A flow is deployed as ``riverbed flow run <domain>`` in a process of its own
(see ``riverbed.processes``), so it outlives the Dagster run that started it.
Its version is a hash of the code it runs and the settings it reads: when
either changes, deploying it again restarts it; otherwise deploying is a no-op.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flows.kit import runner
from riverbed import processes
from riverbed.settings import Settings
from riverbed.topics import (
    IOT_ANOMALIES,
    IOT_DLQ,
    IOT_READINGS,
    PAYMENTS_ALERTS,
    PAYMENTS_DLQ,
    PAYMENTS_TRANSACTIONS,
)

REPO = Path(__file__).resolve().parents[2]
# Only code under these folders changes what a flow does.
_CODE_DIRS = ("flows", "riverbed")


@dataclass(frozen=True)
class FlowSpec:
    domain: str
    source_topic: str
    output_topics: tuple[str, ...]
    datasets: tuple[str, ...]


FLOWS: dict[str, FlowSpec] = {
    "payments": FlowSpec(
        domain="payments",
        source_topic=PAYMENTS_TRANSACTIONS,
        output_topics=(PAYMENTS_ALERTS, PAYMENTS_DLQ),
        datasets=("transactions", "alerts", "merchant_minute"),
    ),
    "iot": FlowSpec(
        domain="iot",
        source_topic=IOT_READINGS,
        output_topics=(IOT_ANOMALIES, IOT_DLQ),
        datasets=("readings", "anomalies", "device_window", "room_state"),
    ),
}


def deployment_dir(settings: Settings, domain: str) -> Path:
    """Where a deployment keeps its record: the flow's own directory, beside its status
    files, lock and recovery store."""
    return runner.flow_dir(settings, domain)


def flow_version(settings: Settings) -> str:
    digest = hashlib.sha256()
    for folder in _CODE_DIRS:
        for path in sorted((REPO / folder).rglob("*.py")):
            digest.update(str(path.relative_to(REPO)).encode())
            digest.update(path.read_bytes())
    for key, value in sorted(settings.to_env().items()):
        digest.update(f"{key}={value}\n".encode())
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class DeployOutcome:
    deployment: processes.Deployment
    action: str  # "started", "restarted" or "unchanged"


def deploy(settings: Settings, domain: str) -> DeployOutcome:
    """Start the flow, restart it if its version changed, or leave it running."""
    directory = deployment_dir(settings, domain)
    version = flow_version(settings)
    current = processes.read_deployment(directory)
    if processes.is_alive(current) and current is not None:
        if current.version == version:
            return DeployOutcome(current, "unchanged")
        processes.stop(current)
        action = "restarted"
    else:
        processes.reap_group(current)
        action = "started"
    (directory / "STOPPED").unlink(missing_ok=True)
    runner.fenced_mark(settings, domain).unlink(missing_ok=True)  # deployed on purpose
    deployment = processes.start(
        f"{domain}-flow",
        [sys.executable, "-m", "riverbed.cli", "flow", "run", domain],
        directory,
        env={**os.environ, **settings.to_env()},
        version=version,
        cwd=REPO,
    )
    return DeployOutcome(deployment, action)


def stop(settings: Settings, domain: str, timeout: float | Callable[[], float] = 30.0) -> bool:
    """Stop the flow cleanly (killed if still running after ``timeout``, see
    :func:`riverbed.processes.stop`) and mark it stopped on purpose, so liveness leaves it
    down."""
    directory = deployment_dir(settings, domain)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "STOPPED").touch()
    return processes.stop_if_alive(processes.read_deployment(directory), timeout)


def stopped_on_purpose(settings: Settings, domain: str) -> bool:
    return (deployment_dir(settings, domain) / "STOPPED").exists()


#: What to do about a flow that stopped fenced (the sensor and the alive check say it).
FENCED_ADVICE = (
    "stop the other copy of the flow (another platform on the same cluster and lake), "
    "then materialize the flow"
)


def fenced(settings: Settings, domain: str) -> str | None:
    """Why the flow stopped fenced (another copy took its partitions over), if it did:
    the mark ``riverbed flow run`` left (:data:`flows.kit.runner.FENCED_MARK`)."""
    try:
        return runner.fenced_mark(settings, domain).read_text().strip()
    except FileNotFoundError:
        return None
