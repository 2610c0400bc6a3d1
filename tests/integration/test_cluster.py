"""A local three-node cluster, for real: health, replication by declaration, a broker
down, a rolling restart under a producer.

The cluster is the session's (``cluster`` in tests/conftest.py): every node up and
every partition in sync when a test starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from orchestration.defs.kafka.checks import IN_SYNC_CHECK
from orchestration.defs.kafka.sensors import kafka_cluster_health
from orchestration.lib.settings import RiverbedResource
from riverbed.broker import LocalCluster
from riverbed.kafka_admin import apply_topics, describe_topics, recreate_topics
from riverbed.kafka_health import ClusterHealth, cluster_health
from riverbed.settings import Settings
from riverbed.topics import CATALOG, TopicSpec
from tests.support.env import use_settings
from tests.support.faults import kill_nodes
from tests.support.flow_harness import read_topic

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


def riverbed_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERBED_")}
    env.update(settings.to_env())
    return subprocess.run(
        [sys.executable, "-m", "riverbed.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_three_nodes_report_every_broker_and_the_quorum(cluster: LocalCluster) -> None:
    status = cluster.status()
    assert status.running and sorted(status.pids) == [1, 2, 3]
    assert "already running" in cluster.start().message

    health = cluster_health(cluster.settings, expected=cluster.nodes)
    assert health.healthy, health.report()
    assert health.brokers == {n.id: n.address for n in cluster.nodes}
    assert health.quorum_voters == (1, 2, 3)
    assert health.quorum_leader in {1, 2, 3}

    shown = riverbed_cli(cluster.settings, "kafka", "status")
    assert shown.returncode == 0, shown.stderr
    for node in cluster.nodes:
        assert f"broker {node.id} ({node.address}): up" in shown.stdout
    assert f"controller quorum: leader {health.quorum_leader}, voters [1, 2, 3]" in shown.stdout


def test_declared_topics_get_three_replicas_two_in_sync(cluster: LocalCluster) -> None:
    recreate_topics(cluster.settings)
    states = describe_topics(
        AdminClient(cluster.settings.kafka_client_config()), [s.name for s in CATALOG]
    )
    for spec in CATALOG:
        state = states[spec.name]
        assert state.replication_factor == 3
        assert state.configs["min.insync.replicas"] == "2"
        assert all(sorted(replicas) == [1, 2, 3] for replicas in state.assignment.values())
    # Leaders spread over the brokers, not all on one.
    leaders = {r[0] for s in states.values() for r in s.assignment.values()}
    assert leaders == {1, 2, 3}


def test_apply_raises_the_replication_factor_by_reassignment(cluster: LocalCluster) -> None:
    settings = cluster.settings
    name = f"riverbed.test.rf-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(settings.kafka_client_config())
    admin.create_topics([NewTopic(name, 4, 1)])[name].result()
    values = {f"value-{i}" for i in range(200)}
    producer = Producer({**settings.kafka_client_config(), "acks": "all"})
    for value in sorted(values):
        producer.produce(name, value.encode(), value.encode())
    assert producer.flush(30) == 0
    spec = TopicSpec(name, "test", 4, "replicated later")
    original = describe_topics(admin, [name])[name].assignment
    try:
        (result,) = apply_topics(settings, [spec])
        assert result.ok, result.summary()
        assert result.actions[0].startswith("replication factor 1 -> 3 (new replicas in sync")
        assert "min.insync.replicas=2" in result.actions[1]
        assert result.state is not None and result.state.replication_factor == 3
        assert result.state.under_replicated == [] and result.state.offline == []
        # Each partition kept its replica first (its leader stays preferred).
        assert {p: r[:1] for p, r in result.state.assignment.items()} == original
        assert {m.value().decode() for m in read_topic(settings, name)} == values

        (again,) = apply_topics(settings, [spec])
        assert again.actions == [] and again.ok
    finally:
        admin.delete_topics([name])[name].result()


def health_when(
    cluster: LocalCluster, wanted: Callable[[ClusterHealth], object], timeout: float = 90
) -> ClusterHealth:
    """The cluster's health once ``wanted(health)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        health = cluster_health(cluster.settings, expected=cluster.nodes, quorum=False)
        if wanted(health):
            return health
        assert time.monotonic() < deadline, f"no change within {timeout} s:\n{health.report()}"
        time.sleep(0.5)


def test_a_broker_down_is_named_by_status_and_by_dagster(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    recreate_topics(cluster.settings)
    use_settings(monkeypatch, cluster.settings)
    context = dg.build_sensor_context(resources={"riverbed": RiverbedResource()})
    healthy = kafka_cluster_health(context)
    assert healthy.skip_reason is not None
    assert healthy.skip_reason.skip_message.startswith("healthy: 3 broker(s)")
    assert all(e.passed for e in healthy.asset_events)

    node = cluster.node(2)
    kill_nodes(cluster, node.id)
    # The controller fences a broker that stops heartbeating (broker.session.timeout.ms, 9 s)
    # and takes it out of every ISR.
    health = health_when(cluster, lambda h: h.down and h.under_replicated)
    assert health.down == {2: node.address}
    assert health.offline == ()
    assert all(2 in p.replicas and 2 not in p.in_sync for p in health.under_replicated)

    assert f"{node.name}: DOWN" in cluster.status().message
    shown = riverbed_cli(cluster.settings, "kafka", "status")
    assert shown.returncode == 1
    assert f"broker 2 ({node.address}): DOWN" in shown.stdout
    assert "under-replicated" in shown.stdout

    context = dg.build_sensor_context(
        cursor=healthy.cursor, resources={"riverbed": RiverbedResource()}
    )
    changed = kafka_cluster_health(context)
    assert changed.skip_reason is not None
    assert f"broker 2 ({node.address}) is DOWN" in changed.skip_reason.skip_message
    verdicts = {e.asset_key.to_user_string(): e for e in changed.asset_events}
    assert {e.check_name for e in verdicts.values()} == {IN_SYNC_CHECK}
    assert not any(e.passed for e in verdicts.values())
    assert f"broker 2 ({node.address}) is DOWN" in (
        verdicts["kafka/payments_transactions"].description or ""
    )
    context = dg.build_sensor_context(
        cursor=changed.cursor, resources={"riverbed": RiverbedResource()}
    )
    with pytest.raises(Exception, match=r"broker 2 \(.*\) is DOWN"):
        kafka_cluster_health(context)

    assert f"started {node.name}" in cluster.start().message
    health_when(cluster, lambda h: h.in_sync and not h.down)
    context = dg.build_sensor_context(
        cursor=changed.cursor, resources={"riverbed": RiverbedResource()}
    )
    recovered = kafka_cluster_health(context)
    assert all(e.passed for e in recovered.asset_events)


def test_a_rolling_restart_loses_no_delivery(cluster: LocalCluster) -> None:
    recreate_topics(cluster.settings)
    settings = cluster.settings
    topic = CATALOG[0].name
    acknowledged: list[bytes] = []
    failed: list[KafkaError] = []
    stop = threading.Event()

    def produce() -> None:
        producer = Producer(
            {**settings.kafka_client_config(), "acks": "all", "enable.idempotence": True}
        )

        def report(err: KafkaError | None, msg: object) -> None:
            if err is not None:
                failed.append(err)
            else:
                acknowledged.append(msg.value())  # type: ignore[attr-defined]

        i = 0
        while not stop.is_set():
            producer.produce(topic, f"event-{i}".encode(), f"card-{i % 97}", on_delivery=report)
            producer.poll(0)
            i += 1
            time.sleep(0.005)  # ~200 events/s, as make run produces
        assert producer.flush(60) == 0

    before = cluster.status().pids
    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        status = cluster.restart(rolling=True)
    finally:
        time.sleep(2)
        stop.set()
        thread.join(90)
    assert "restarted one node at a time" in status.message
    assert sorted(status.pids) == [1, 2, 3]
    assert all(status.pids[n] != before[n] for n in before)
    assert failed == []
    assert len(acknowledged) > 1000
    # The producer's own record of what was acknowledged against the topic: all there, and
    # nothing that was not sent. Not "once": when a leader moves under requests in flight,
    # librdkafka's idempotent producer may bump its epoch and write a batch again
    # (confluentinc/librdkafka#4953; 5 of ~2,300 in one run here). Only transactions
    # promise once, which is why the flows write with them and drop resent events.
    stored = [m.value() for m in read_topic(settings, topic)]
    assert set(stored) == set(acknowledged)
    assert len(set(acknowledged)) == len(acknowledged)
    assert len(stored) - len(set(stored)) <= len(stored) // 100, "more than 1% written twice"
