"""Cluster health: every broker up, the controller quorum led, partitions in sync.

Each tick asks the cluster (``riverbed.kafka_health``). When its state changes,
the tick records a ``replicas_in_sync`` evaluation on every topic asset (see
``checks.py``), so the asset pages turn red or green at once; while it stays
unhealthy, each tick fails (red in the sensor's history) naming what is wrong,
for example "broker 2 (127.0.0.1:9093) is DOWN".
"""

import json

import dagster as dg

from orchestration.defs.kafka.checks import IN_SYNC_CHECK, current_health, topic_verdict
from orchestration.lib.keys import topic_key
from orchestration.lib.settings import RiverbedResource
from riverbed.topics import CATALOG

log = dg.get_dagster_logger("riverbed.sensors")


@dg.sensor(
    name="kafka_cluster_health",
    # Each tick runs Kafka's quorum tool (a JVM, ~1.5 s of CPU): once a minute is enough.
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Brokers, controller quorum and partition replicas; fails (red) while the "
    "cluster is unhealthy and records the topics' replicas_in_sync checks when it changes.",
)
def kafka_cluster_health(
    context: dg.SensorEvaluationContext, riverbed: RiverbedResource
) -> dg.SensorResult:
    settings = riverbed.settings()
    health = current_health(settings)
    if health.error:
        log.error("cluster unreachable", extra={"bootstrap": settings.bootstrap_servers})
        raise Exception(
            f"Kafka at {settings.bootstrap_servers}: {health.error}. Start it with "
            "`riverbed kafka start` (local) or check RIVERBED_KAFKA_BOOTSTRAP."
        )
    state = json.dumps(
        {
            "down": sorted(health.down),
            "leader": health.quorum_leader,
            "quorum_error": health.quorum_error,
            "under": sorted(f"{p.topic}/{p.partition}" for p in health.under_replicated),
            "offline": sorted(f"{p.topic}/{p.partition}" for p in health.offline),
        },
        sort_keys=True,
    )
    problems = "; ".join(health.problems())
    if state == context.cursor and not health.healthy:
        raise Exception(f"Kafka cluster unhealthy: {problems}")
    events = []
    if state != context.cursor:
        for spec in CATALOG:
            passed, description, metadata = topic_verdict(health, spec.name)
            events.append(
                dg.AssetCheckEvaluation(
                    asset_key=topic_key(spec.name),
                    check_name=IN_SYNC_CHECK,
                    passed=passed,
                    description=description,
                    metadata=metadata,
                )
            )
    summary = (
        f"UNHEALTHY: {problems}"
        if not health.healthy
        else f"healthy: {len(health.brokers)} broker(s), quorum leader {health.quorum_leader}, "
        f"{health.partitions} partitions in sync at {settings.bootstrap_servers}"
    )
    return dg.SensorResult(skip_reason=summary, cursor=state, asset_events=events)
