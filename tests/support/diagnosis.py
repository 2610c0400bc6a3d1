"""What a failed test adds to its report about the systems it ran on, taken the moment
it failed (before any fixture tears them down).

CI shows a failed test's report and little else: a bounded wait that ran out says only
what it waited for. These sections say what state the cluster or the platform was in,
so the next failure on a machine nobody can log into can be explained from its log.
Each function returns text and never raises: a report must not hide the failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from orchestration.lib import flows
from orchestration.lib.webserver import graphql
from riverbed import processes
from riverbed.broker import LocalCluster
from riverbed.kafka_health import cluster_health
from riverbed.settings import Settings
from tests.support.flow_harness import log_tail

# Lines of each log: enough for the last minutes of a broker or a flow.
TAIL = 25
# The daemon ticks every sensor every few seconds: their lines bury everything else.
_DAGSTER_NOISE = ("SensorDaemon", "SchedulerDaemon", "BackfillDaemon", "AssetDaemon")

RUNS_QUERY = """
{ runsOrError(limit: 15) { __typename
    ... on Runs { results { runId jobName status creationTime startTime endTime } }
    ... on PythonError { message } } }
"""


def cluster_report(cluster: LocalCluster) -> str:
    """The cluster's health as `riverbed kafka status` reports it, and each node's last
    warnings and errors."""
    parts = [
        _safely(
            lambda: cluster_health(
                cluster.settings, expected=cluster.nodes, quorum_timeout_s=10
            ).report()
        )
    ]
    for node in cluster.nodes:
        parts.append(f"--- {node.name}: the last warnings and errors of {node.server_log}")
        parts.append(_tail(node.server_log, keep=_is_warning))
    return "\n".join(parts)


def platform_report(settings: Settings) -> str:
    """The platform's recent Dagster runs, the Dagster log without the sensor ticks, and
    the end of each deployed flow's log."""
    parts = ["--- the last Dagster runs (newest first)", _safely(lambda: _runs(settings))]
    dagster_log = settings.home / "logs" / "dagster.log"
    parts.append(f"--- {dagster_log}, without the daemon's ticks")
    parts.append(_tail(dagster_log, keep=lambda line: not any(n in line for n in _DAGSTER_NOISE)))
    for domain in flows.FLOWS:
        deployment = processes.read_deployment(flows.deployment_dir(settings, domain))
        if deployment is None:
            parts.append(f"--- flow {domain}: no deployment record")
            continue
        parts.append(f"--- flow {domain} (pid {deployment.pid}): {deployment.log_path}")
        parts.append(processes.tail(deployment.log_path, TAIL) or "(nothing)")
    return "\n".join(parts)


def _runs(settings: Settings) -> str:
    answer = graphql(settings, RUNS_QUERY, timeout=10)["runsOrError"]
    if answer["__typename"] != "Runs":
        return f"runsOrError answered {answer}"
    now = time.time()
    lines = []
    for run in answer["results"]:
        start, end = run["startTime"], run["endTime"]
        took = f"{end - start:.0f} s" if start and end else "-"
        lines.append(
            f"{run['jobName']:<24} {run['status']:<10} created {now - run['creationTime']:.0f} s "
            f"ago, ran {took} ({run['runId'][:8]})"
        )
    return "\n".join(lines) or "no runs"


def _is_warning(line: str) -> bool:
    return " WARN " in line or " ERROR " in line


def _tail(path: Path, keep: Callable[[str], bool]) -> str:
    """The last TAIL lines of ``path`` that ``keep`` accepts, each cut at 400 characters."""
    return "\n".join(line[:400] for line in log_tail(path, TAIL, keep).splitlines()) or "(nothing)"


def _safely(ask: Callable[[], str]) -> str:
    try:
        return ask()
    except Exception as exc:  # a report must not hide the failure
        return f"(could not ask: {exc!r})"
