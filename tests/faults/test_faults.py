"""The fault suite: faults injected into the real three-node cluster while the producer
runs at a fixed rate and the flow is deployed, checked against the producer's own
record of what the cluster acknowledged (``tests/support/faults.py``).

Run it alone with ``pytest -m fault``; ``make test`` runs it with everything else.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from orchestration.lib import flows
from riverbed import lake, processes
from riverbed.broker import LocalCluster
from riverbed.kafka_admin import recreate_topics
from riverbed.kafka_health import busiest_leader, cluster_health
from riverbed.settings import Settings, load_settings
from tests.support.env import free_port
from tests.support.faults import (
    Dagster,
    RecordingProducer,
    Supervised,
    check_lake_against,
    fill_disk,
    kill_nodes,
    stop_producing,
    tmpfs,
)
from tests.support.flow_harness import (
    committed_offsets,
    drained,
    end_offsets,
    lake_offsets,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.fault]


@pytest.fixture
def fault_settings(cluster: LocalCluster, tmp_path: Path) -> Iterator[Settings]:
    """The cluster's topics, empty; a home and a consumer group of this test's own. No
    producer the test started outlives it."""
    recreate_topics(cluster.settings)
    yield load_settings(
        kafka_bootstrap=cluster.settings.bootstrap_servers,
        kafka_dist=cluster.settings.kafka_dist,
        home=tmp_path / "riverbed",
        consumer_group=f"riverbed.payments.fault-{uuid.uuid4().hex[:8]}",
        flush_interval_s=1.0,
        snapshot_interval_s=1,
        log_level="INFO",
    )
    stop_producing()


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
        partitions = set(end_offsets(fault_settings))
        victim = busiest_leader(fault_settings)
        killed_at = kill_nodes(cluster, victim)
        # Until every partition took a write sent after the kill (its leader moved): what
        # `recovered` below measures, and more than 60 s of it fails the test anyway.
        flow.run_until(
            lambda: producer.acknowledged_partitions(killed_at) == partitions,
            60,
            "writes to every partition to resume",
        )
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
    assert raw_client_lines(log) == []


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
        # and the broker aborts them on its next sweep (every second on the test
        # cluster: TEST_CLUSTER_OVERRIDES in tests/conftest.py), fencing them.
        flow.signal(signal.SIGSTOP)
        time.sleep(16)
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

        def workers() -> list[psutil.Process]:
            # The Bytewax processes, not the short-lived `bytewax.recovery` that creates
            # the store first (on a busy machine it is still running when looked at).
            found = []
            for child in leader.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "flows.run" in child.cmdline():
                        found.append(child)
            return found

        wait_until(
            lambda: len(workers()) >= 1, 60, "the flow's workers", [], Path(deployed.log_path)
        )
        running = workers()
        leader.kill()
        leader.wait(10)
        assert all(w.is_running() for w in running)
        assert flows.stop(settings, "payments")
        gone, alive = psutil.wait_procs(running, timeout=1)
        assert alive == [] and len(gone) == len(running)
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
        # Past start-up: the flow has joined its group and committed a transaction.
        flow.run_until(lambda: bool(lake_offsets(fault_settings)), 90, "a lake commit")
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
    producer = RecordingProducer(fault_settings, rate=200, delivery_timeout_s=12).start()
    flow = Supervised(fault_settings, log).start()
    try:
        flow.run_until(lambda: bool(lake_offsets(fault_settings)), 90, "a lake commit")
        kill_nodes(cluster, 2, 3)
        # Past the producer's delivery timeout (12 s): a write failed.
        flow.run_until(lambda: bool(producer.failed), 60, "a write to fail")
        # The one node left has lost its controller quorum: no leader moves, no ISR
        # shrinks, acks=all writes cannot complete, and status says why. (A quorum
        # without a majority answers nothing: its description times out, after 10 s
        # here rather than the admin client's default 60 s.)
        health = cluster_health(cluster.settings, expected=cluster.nodes, quorum_timeout_s=10)
        assert "1 of 3 brokers running" in cluster.status().message
        assert not health.healthy and health.quorum_error is not None, health.report()
        cluster.start()
        back = time.monotonic()
        # About 20 s here, also with two busy loops taking the cores; a bound, not a
        # speed target.
        flow.run_until(
            lambda: any(d.sent_at >= back for d in producer.acknowledged),
            120,
            "writes to succeed again",
        )
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
    assert raw_client_lines(log) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting the lake's small disk (tmpfs) needs root")
def test_a_full_lake_disk_commits_nothing_and_resumes_by_itself(
    cluster: LocalCluster, fault_settings: Settings, tmp_path: Path, record_property: object
) -> None:
    # Transactions time out after 10 s here, so a Kafka transaction left open while
    # the lake is full would be aborted by the broker and its producer fenced.
    settings = load_settings(
        **{**fault_settings.model_dump(exclude_none=True), "flow_transaction_timeout_s": 10}
    )
    log = tmp_path / "flow.log"
    said = "lake unavailable: no space left on device"
    with tmpfs(settings.lake_dir, size="64m"):
        producer = RecordingProducer(settings, rate=200).start()
        flow = Supervised(settings, log).start()
        try:
            every_partition = set(end_offsets(settings))
            flow.run_until(
                lambda: set(lake_offsets(settings)) == every_partition,
                90,
                "every partition's commit",
            )
            filler = fill_disk(settings.lake_dir)
            flow.run_until(lambda: said in log.read_text(), 60, "the flow to say why")
            group_full, lake_full = committed_offsets(settings), lake_offsets(settings)
            # Past the transaction timeout and the broker's next sweep for timed-out
            # transactions (every second on the test cluster), with the producer running.
            time.sleep(15)
            group_later, lake_later = committed_offsets(settings), lake_offsets(settings)
            backlog = sum(end_offsets(settings).values()) - sum(group_later.values())
            filler.unlink()  # space returns; nobody restarts anything
            freed_at = time.monotonic()
            flow.run_until(lambda: lake_offsets(settings) != lake_later, 60, "a lake commit")
            resumed_s = time.monotonic() - freed_at
            producer.stop()
            flow.run_until(drained(settings), 240, "the flow to catch up")
            still_running = flow.running()
        finally:
            producer.stop()
            flow.stop()
        text = log.read_text()
        record_property("resumed_s", round(resumed_s, 1))
        record_property("backlog_while_full", backlog)
        # While full: neither the lake nor the group's offsets moved, although events
        # kept arriving. The group may be ahead of the lake only by what live alert
        # commits covered before the failed flush (at most about one flush interval
        # of input; they make alerts visible within 0.2 s).
        assert lake_later == lake_full and group_later == group_full
        assert backlog > 200 * 10, f"the producer was not producing meanwhile ({backlog})"
        ahead = {p: group_later[p] - lake_later.get(p, 0) for p in group_later}
        record_property("group_ahead_of_lake", ahead)
        assert sum(max(0, n) for n in ahead.values()) <= 200 * 2 * (settings.flush_interval_s + 1)
        # Said why once, with the lake, the error and what to do; resumed on its own.
        lines = [line for line in text.splitlines() if said in line]
        assert len(lines) == 1, lines
        assert f"lake={settings.lake_dir}" in lines[0] and "free space" in lines[0]
        assert "lake writable again" in text
        assert flow.restarts == 0 and still_running, "the flow stopped"
        assert resumed_s < 30
        # Delta's log is consistent (a failed write left no commit behind) and the lake
        # holds every acknowledged transaction once.
        assert [d.error for d in producer.failed] == []
        stored = check_lake_against(settings, producer)
        assert lake.read_table(settings.lake_dir, "transactions", columns=["_offset"]).num_rows == (
            stored
        )


def test_dagster_restarted_under_a_running_flow_leaves_it_running(
    cluster: LocalCluster, fault_settings: Settings, tmp_path: Path, record_property: object
) -> None:
    settings = load_settings(
        **{**fault_settings.model_dump(exclude_none=True), "dagster_port": free_port()}
    )
    producer = RecordingProducer(settings, rate=200).start()
    dagster = Dagster(settings).start()
    dagster_log = settings.home / "logs" / "dagster.log"

    def liveness_tick(after: float) -> dict | None:
        """The newest finished tick since ``after`` (a tick still STARTED has no outcome)."""
        ticks = [
            t
            for t in dagster.sensor_ticks("flow_liveness")
            if t["timestamp"] > after and t["status"] != "STARTED"
        ]
        return ticks[0] if ticks else None

    try:
        # Deployed as the flows/payments asset deploys it (the asset's own code, run here
        # while Dagster starts: a materialization through the CLI costs a minute more);
        # Dagster's liveness sensor then watches it through its deployment record.
        deployment = flows.deploy(settings, "payments").deployment
        leader = psutil.Process(deployment.pid)
        dagster.wait()
        began = time.time() - 3600
        wait_until(lambda: liveness_tick(began) is not None, 120, "a sensor tick", [], dagster_log)
        wait_until(
            lambda: bool(leader.children()) and bool(lake_offsets(settings)),
            90,
            "the deployed flow's first lake commit",
            [],
            Path(deployment.log_path),
        )
        flow_procs = {p.pid: p.create_time() for p in [leader, *leader.children(recursive=True)]}

        dagster.kill()
        lake_at_kill = sum(lake_offsets(settings).values())
        restarted_at = time.time()
        dagster.start()
        # While Dagster is still starting (it takes longer than this), a commit comes.
        deadline = time.monotonic() + 3 * settings.flush_interval_s + 2
        while (lake_while_down := sum(lake_offsets(settings).values())) <= lake_at_kill:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        dagster.wait()
        wait_until(
            lambda: liveness_tick(restarted_at) is not None, 120, "a new tick", [], dagster_log
        )
        record_property("dagster_back_s", round(time.time() - restarted_at, 1))
        tick = liveness_tick(restarted_at)
        now_procs = {p.pid: p.create_time() for p in [leader, *leader.children(recursive=True)]}
        producer.stop()
        wait_until(drained(settings), 180, "the flow to catch up", [], Path(deployment.log_path))
        after = processes.read_deployment(flows.deployment_dir(settings, "payments"))
    finally:
        producer.stop()
        dagster.kill()
        flows.stop(settings, "payments")
    # The flow never noticed: the same processes throughout, consuming while Dagster
    # was down, found again by the restarted sensor (alive: nothing redeployed).
    assert lake_while_down > lake_at_kill, "the lake did not grow while Dagster was down"
    assert now_procs == flow_procs and after == deployment
    assert tick is not None and tick["runIds"] == [], tick
    assert "payments: alive" in (tick["skipReason"] or ""), tick
    assert check_lake_against(settings, producer) > 0


def raw_client_lines(log: Path) -> list[str]:
    """librdkafka's own lines printed raw (``%3|<time>|FAIL|...``) in a flow's log: every
    Kafka client of a flow hands them to the flow's logger instead (logfmt)."""
    return [line for line in log.read_text().splitlines() if re.match(r"%\d\|", line)]
