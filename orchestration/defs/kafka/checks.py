"""Cluster health as asset checks: ``replicas_in_sync`` on every topic asset.

A topic's check passes when every broker is up, the controller quorum has a
leader, and every partition of the topic has a leader and all its replicas in
sync. Its metadata names the brokers (a broker that is down by id and address),
the quorum leader, and the topic's under-replicated and offline partitions.

Run it from the UI at any time ("Execute checks"); the ``kafka_cluster_health``
sensor records the same evaluation whenever the cluster's state changes.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from orchestration.lib.keys import topic_key
from orchestration.lib.settings import RiverbedResource
from riverbed.broker import LocalCluster
from riverbed.kafka_health import ClusterHealth, cluster_health
from riverbed.settings import Settings
from riverbed.topics import CATALOG

IN_SYNC_CHECK = "replicas_in_sync"


def current_health(settings: Settings) -> ClusterHealth:
    return cluster_health(settings, expected=LocalCluster(settings).nodes)


def topic_verdict(health: ClusterHealth, topic: str) -> tuple[bool, str, dict[str, Any]]:
    """(passed, description, metadata) of ``replicas_in_sync`` for one topic."""
    under = [p for p in health.under_replicated if p.topic == topic]
    offline = [p for p in health.offline if p.topic == topic]
    problems = [line for line in health.problems() if "partition(s)" not in line]
    if offline:
        problems.append(
            f"{len(offline)} offline partition(s): " + ", ".join(str(p.partition) for p in offline)
        )
    if under:
        problems.append(
            f"{len(under)} under-replicated partition(s): "
            + ", ".join(str(p.partition) for p in under)
        )
    metadata = {
        "brokers_up": dg.MetadataValue.json({str(i): a for i, a in sorted(health.brokers.items())}),
        "brokers_down": dg.MetadataValue.json({str(i): a for i, a in sorted(health.down.items())}),
        "quorum_leader": health.quorum_leader if health.quorum_leader is not None else -1,
        "under_replicated": dg.MetadataValue.json([p.describe() for p in under]),
        "offline": dg.MetadataValue.json([p.describe() for p in offline]),
    }
    description = "; ".join(problems) or (
        f"{len(health.brokers)} brokers up, quorum leader {health.quorum_leader}, "
        "every partition in sync"
    )
    return not problems, description, metadata


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            IN_SYNC_CHECK,
            asset=topic_key(spec.name),
            description="Brokers up, quorum led, every partition with all replicas in sync.",
        )
        for spec in CATALOG
    ],
    can_subset=True,
    name="kafka_replicas_in_sync",
)
def kafka_replicas_in_sync(
    context: dg.AssetCheckExecutionContext, riverbed: RiverbedResource
) -> Iterator[dg.AssetCheckResult]:
    health = current_health(riverbed.settings())
    if health.error:
        raise dg.Failure(health.error)
    selected = {key.asset_key for key in context.selected_asset_check_keys}
    for spec in CATALOG:
        if topic_key(spec.name) not in selected:
            continue
        passed, description, metadata = topic_verdict(health, spec.name)
        yield dg.AssetCheckResult(
            asset_key=topic_key(spec.name),
            check_name=IN_SYNC_CHECK,
            passed=passed,
            description=description,
            metadata=metadata,
        )
