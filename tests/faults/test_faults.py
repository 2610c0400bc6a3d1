"""The fault suite: faults injected into the real three-node cluster while the producer
runs at a fixed rate and the flow is deployed, checked against the producer's own
record of what the cluster acknowledged (``tests/support/faults.py``).

Run it alone with ``pytest -m fault``; ``make test`` runs it with everything else.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil
import pytest

from orchestration.lib import flows
from riverbed import processes
from riverbed.broker import LocalCluster
from riverbed.kafka_admin import recreate_topics
from riverbed.kafka_health import busiest_leader, cluster_health
from riverbed.settings import Settings, load_settings
from tests.support.faults import (
    RecordingProducer,
    Supervised,
    check_lake_against,
    kill_nodes,
)
from tests.support.flow_harness import (
    drained,
    lake_offsets,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.fault]


@pytest.fixture
def fault_settings(cluster: LocalCluster, tmp_path: Path) -> Settings:
    """The cluster's topics, empty; a home and a consumer group of this test's own."""
    recreate_topics(cluster.settings)
    return load_settings(
        kafka_bootstrap=cluster.settings.bootstrap_servers,
        kafka_dist=cluster.settings.kafka_dist,
        home=tmp_path / "riverbed",
        consumer_group=f"riverbed.payments.fault-{uuid.uuid4().hex[:8]}",
        flush_interval_s=1.0,
        log_level="INFO",
    )


def test_kill_9_of_the_busiest_leader_loses_and_duplicates_nothing(
    cluster: LocalCluster, fault_settings: Settings, tmp_path: Path, record_property: object
) -> None:
    log = tmp_path / "flow.log"
    producer = RecordingProducer(fault_settings, rate=300).start()
    # As deployed: `riverbed flow run`, which restarts its processes if a Kafka client
    # gets stuck on librdkafka#5511 (the group coordinator's broker killed).
    flow = Supervised(fault_settings, log).start()
    try:
        flow.run_until(lambda: bool(lake_offsets(fault_settings)), 90, "a lake commit")
        victim = busiest_leader(fault_settings)
        killed_at = kill_nodes(cluster, victim)
        time.sleep(20)
        producer.stop()
        flow.run_until(drained(fault_settings), 240, "the flow to catch up")
        still_running = flow.running()
    finally:
        flow.stop()
    assert flow.restarts == 0 and still_running, "the deployed flow stopped"
    record_property("worker_restarts", log.read_text().count("after a stuck Kafka client"))
    assert [d.error for d in producer.failed] == []
    recovered = producer.recovered_at(killed_at)
    stalls = producer.stalls(killed_at)
    record_property("recovered_s", round(recovered, 2))
    record_property("worst_ack_s", round(stalls[-1], 2))
    assert recovered < 60, f"writes to every partition took {recovered:.1f} s to resume"
    assert check_lake_against(fault_settings, producer) > 0


def test_a_flow_frozen_past_its_timeouts_duplicates_nothing(
    cluster: LocalCluster, fault_settings: Settings, tmp_path: Path, record_property: object
) -> None:
    log = tmp_path / "flow.log"
    settings = load_settings(
        **{**fault_settings.model_dump(exclude_none=True), "flow_transaction_timeout_s": 10}
    )
    producer = RecordingProducer(settings, rate=200).start()
    flow = Supervised(settings, log).start()
    try:
        flow.run_until(lambda: bool(lake_offsets(settings)), 90, "a lake commit")
        # As `docker pause` or a suspended VM: the whole deployment freezes. Its open
        # transactions time out after 10 s (RIVERBED_FLOW_TRANSACTION_TIMEOUT_S here),
        # and the broker aborts them on its next sweep (every 10 s), fencing them.
        flow.signal(signal.SIGSTOP)
        time.sleep(30)
        flow.signal(signal.SIGCONT)
        time.sleep(5)
        producer.stop()
        flow.run_until(drained(settings), 240, "the flow to catch up")
    finally:
        flow.stop()
    record_property("flow_restarts", flow.restarts)
    assert flow.unclear_exits() == []
    assert [d.error for d in producer.failed] == []
    assert check_lake_against(settings, producer) > 0


def test_stop_stops_every_worker_of_a_flow_whose_parent_died(
    cluster: LocalCluster, fault_settings: Settings
) -> None:
    settings = fault_settings
    deployed = flows.deploy(settings, "payments").deployment
    try:
        leader = psutil.Process(deployed.pid)
        wait_until(
            lambda: len(leader.children(recursive=True)) >= 1,
            60,
            "the flow's workers",
            [],
            Path(deployed.log_path),
        )
        workers = leader.children(recursive=True)
        leader.kill()
        leader.wait(10)
        assert all(w.is_running() for w in workers)
        assert flows.stop(settings, "payments")
        gone, alive = psutil.wait_procs(workers, timeout=1)
        assert alive == [] and len(gone) == len(workers)
    finally:
        processes.stop(deployed, timeout=5)


def test_a_flow_started_as_the_cluster_comes_up_does_not_die(
    cluster: LocalCluster, fault_settings: Settings, tmp_path: Path
) -> None:
    # Right after a start the group and transaction coordinators are still loading
    # their topics: NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS. Retriable: the flow
    # must wait them out, not die at start-up.
    log = tmp_path / "flow.log"
    cluster.stop()
    cluster.start()
    flow = Supervised(fault_settings, log).start()
    producer = RecordingProducer(fault_settings, rate=200).start()
    try:
        time.sleep(15)
        producer.stop()
        flow.run_until(drained(fault_settings), 180, "the flow to catch up")
        still_running = flow.running()
    finally:
        flow.stop()
    assert flow.restarts == 0 and still_running, "the flow died at start-up"
    assert "after a stuck Kafka client" not in log.read_text()  # no worker restarted either
    assert check_lake_against(fault_settings, producer) > 0


def test_losing_two_of_three_brokers_stops_writes_and_loses_nothing(
    cluster: LocalCluster, fault_settings: Settings, tmp_path: Path, record_property: object
) -> None:
    log = tmp_path / "flow.log"
    producer = RecordingProducer(fault_settings, rate=200, delivery_timeout_s=20).start()
    flow = Supervised(fault_settings, log).start()
    try:
        flow.run_until(lambda: bool(lake_offsets(fault_settings)), 90, "a lake commit")
        kill_nodes(cluster, 2, 3)
        time.sleep(30)
        # The one node left has lost its controller quorum: no leader moves, no ISR
        # shrinks, acks=all writes cannot complete, and status says why.
        health = cluster_health(cluster.settings, expected=cluster.nodes)
        assert "1 of 3 brokers running" in cluster.status().message
        assert not health.healthy and health.quorum_error is not None, health.report()
        cluster.start()
        time.sleep(20)
        producer.stop()
        flow.run_until(drained(fault_settings), 300, "the flow to catch up")
    finally:
        flow.stop()
    errors = Counter(d.error.name() for d in producer.failed if d.error is not None)
    record_property("failed_deliveries", dict(errors))
    record_property("flow_restarts", flow.restarts)
    assert errors, "no write failed while two of three brokers were down"
    assert set(errors) <= {"_MSG_TIMED_OUT", "NOT_ENOUGH_REPLICAS", "REQUEST_TIMED_OUT"}
    assert flow.unclear_exits() == []
    assert check_lake_against(fault_settings, producer) > 0
