"""The payments flow against the real broker: source, sinks, processes, restarts.

Uses ``kafka_settings`` from ``tests/conftest.py`` (the session broker, or the
cluster named by ``RIVERBED_TEST_BOOTSTRAP``): the declared topics, empty.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from flows.kit.fencing import FENCED_EXIT
from flows.kit.kafka_outputs import MAX_OPEN_S, KafkaOutputs, ProducerFenced
from flows.kit.kafka_source import KafkaPartitionedSource
from flows.kit.records import DlqRecord, SourceBatch
from flows.kit.status import read_status
from flows.payments import flow_dir, settings_env
from flows.payments.config import FlowConfig
from flows.payments.records import AlertRecord
from riverbed import lake
from riverbed.settings import Settings, load_settings
from riverbed.topics import PAYMENTS_ALERTS, PAYMENTS_DLQ, PAYMENTS_TRANSACTIONS
from tests.support.flow_harness import (
    REPO,
    committed_offsets,
    drained,
    end_offsets,
    generate,
    log_tail,
    produce,
    query,
    read_records,
    read_topic,
    reference_alerts,
    run_until,
    scan,
    start_flow,
    stop_flow,
    wait_until,
)

pytestmark = pytest.mark.kafka


def flow_settings(kafka_settings: Settings, **overrides: object) -> Settings:
    return load_settings(
        kafka_bootstrap=kafka_settings.bootstrap_servers,
        consumer_group=kafka_settings.consumer_group,
        home=kafka_settings.home,
        flush_interval_s=1.0,
        snapshot_interval_s=1,
        **overrides,
    )


# -- the tests ----------------------------------------------------------------------------


def test_two_processes_land_everything_once(kafka_settings: Settings) -> None:
    settings = flow_settings(kafka_settings)
    events = generate(20_000, seed=5)
    produce(settings, events)

    def all_windows_closed() -> bool:
        if not drained(settings)() or len(read_status(flow_dir(settings))) < 2:
            return False
        # Once every partition is idle, every window closes: each on-time transaction
        # is then counted in merchant_minute.
        return window_total(settings) == on_time(settings)

    run_until(settings, all_windows_closed, processes=2)

    valid = {e.transaction_id for e in events if e.valid}
    rows = query(f"select transaction_id from {scan(settings, 'transactions')}")
    assert Counter(r[0] for r in rows) == Counter(valid)

    dlq = list(read_topic(settings, PAYMENTS_DLQ))
    # A Counter, not a set: two invalid messages can have the same bytes (a truncated one).
    assert Counter(m.value() for m in dlq) == Counter(e.value for e in events if not e.valid)
    headers = dict(dlq[0].headers())
    assert set(headers) == {"error", "source.topic", "source.partition", "source.offset"}
    assert b":" in headers["error"]

    published = [json.loads(m.value()) for m in read_topic(settings, PAYMENTS_ALERTS)]
    reference = reference_alerts(read_records(settings), FlowConfig())
    expected = {(a.alert_id, a.rule, a.transaction_id) for a in reference}
    assert Counter((a["alert_id"], a["rule"], a["transaction_id"]) for a in published) == Counter(
        expected
    )

    statuses = read_status(flow_dir(settings))
    assert sorted(p.name for p in flow_dir(settings).glob("status*.json")) == [
        "status-0.json",
        "status-1.json",
    ]
    owned = [set(s["committed_offsets"]) for s in statuses]
    assert not owned[0] & owned[1], "each partition's sink runs in one process"
    assert sum(s["rows_committed"].get("transactions", 0) for s in statuses) == len(valid)
    assert {s["pid"] for s in statuses}.__len__() == 2

    windows = query(
        f"select count(*), count(distinct (merchant_id, window_start)) "
        f"from {scan(settings, 'merchant_minute')}"
    )[0]
    assert windows[0] == windows[1], "no window emitted twice"


def window_total(settings: Settings) -> int:
    sql = f"select coalesce(sum(txn_count), 0) from {scan(settings, 'merchant_minute')}"
    return query(sql)[0][0]


def on_time(settings: Settings) -> int:
    sql = f"select count(*) from {scan(settings, 'transactions')} where not late"
    return query(sql)[0][0]


def test_without_recovery_a_restart_resumes_at_the_committed_offsets(
    kafka_settings: Settings,
) -> None:
    settings = flow_settings(kafka_settings)
    first, second = generate(6_000, seed=8), generate(4_000, seed=9)
    produce(settings, first)
    run_until(settings, drained(settings), recovery=False)
    committed = committed_offsets(settings)
    assert sum(committed.values()) == len(first), "kafka-consumer-groups sees no lag"
    produce(settings, second)
    assert sum(committed_offsets(settings).values()) == len(first), "lag until it runs"
    run_until(settings, drained(settings), recovery=False)

    valid = {e.transaction_id for e in first + second if e.valid}
    rows = query(f"select transaction_id from {scan(settings, 'transactions')}")
    assert Counter(r[0] for r in rows) == Counter(valid)
    dlq = Counter(m.value() for m in read_topic(settings, PAYMENTS_DLQ))
    assert dlq == Counter(e.value for e in first + second if not e.valid)
    table = lake.open_table(settings.lake_dir, "transactions")
    assert lake.stored_offsets(table, PAYMENTS_TRANSACTIONS, range(6)) == end_offsets(settings), (
        "the lake's commits say it holds every partition to its end"
    )


def test_the_source_batches_ticks_and_resumes(kafka_settings: Settings) -> None:
    settings = flow_settings(kafka_settings)
    source = KafkaPartitionedSource(
        settings,
        PAYMENTS_TRANSACTIONS,
        [0, 1],
        start_offsets={},
        batch_size=3,
        tick_s=0.05,
        idle_after_s=0.3,
    )
    assert source.list_parts() == [f"{PAYMENTS_TRANSACTIONS}/0", f"{PAYMENTS_TRANSACTIONS}/1"]
    part = source.build_part("read", f"{PAYMENTS_TRANSACTIONS}/0", None)
    try:
        ticks = poll(part, lambda b: b.idle, 10)
        assert ticks[-1].records == [] and ticks[-1].caught_up and ticks[-1].next_offset == 0

        producer = Producer(settings.kafka_client_config())
        for i in range(5):
            producer.produce(PAYMENTS_TRANSACTIONS, b"v%d" % i, b"k", partition=0)
        producer.flush(10)
        batches = poll(part, lambda b: b.next_offset == 5, 10)
        records = [r for b in batches for r in b.records]
        assert [(o, k, v) for o, k, v, _ts in records] == [(i, b"k", b"v%d" % i) for i in range(5)]
        assert max(len(b.records) for b in batches) <= 3, "batches of at most batch_size"
        assert all(ts > 0 for *_r, ts in records), "the Kafka timestamp comes along"
        assert not batches[-1].idle
        assert part.snapshot() == 5
    finally:
        part.close()

    resumed = source.build_part("read", f"{PAYMENTS_TRANSACTIONS}/0", 3)
    try:
        batches = poll(resumed, lambda b: b.next_offset == 5, 10)
        assert [r[0] for b in batches for r in b.records] == [3, 4]
    finally:
        resumed.close()

    # No resume state: start where it is told to (flows.kit.start_offsets).
    told = KafkaPartitionedSource(settings, PAYMENTS_TRANSACTIONS, [0, 1], start_offsets={0: 4})
    fresh = told.build_part("read", f"{PAYMENTS_TRANSACTIONS}/0", None)
    try:
        batches = poll(fresh, lambda b: b.next_offset == 5, 10)
        assert [r[0] for b in batches for r in b.records] == [4]
    finally:
        fresh.close()


def poll(part: object, until: Callable[[SourceBatch], bool], timeout: float) -> list[SourceBatch]:
    out: list[SourceBatch] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = part.next_batch()  # type: ignore[attr-defined]
        out.extend(batch)
        if batch and until(batch[-1]):
            return out
        time.sleep(0.01)
    raise AssertionError(f"condition not met; last: {out[-1:]}")


def outputs_for(settings: Settings, partition: int) -> KafkaOutputs:
    return KafkaOutputs(
        settings,
        source_topic=PAYMENTS_TRANSACTIONS,
        partition=partition,
        dlq_topic=PAYMENTS_DLQ,
        alerts_topic=PAYMENTS_ALERTS,
    )


def test_outputs_and_the_group_offset_commit_together(kafka_settings: Settings) -> None:
    settings = flow_settings(kafka_settings)
    outputs = outputs_for(settings, 2)
    assert outputs.committed == 0
    outputs.publish(
        [DlqRecord(7, b"card-1", b"{broken", "value: not valid JSON")],
        [AlertRecord("a1", "velocity", "card-1", "tx-1", 0, 0, 1.0, "{}", 8, b'{"alert_id":"a1"}')],
    )
    assert list(read_topic(settings, PAYMENTS_DLQ)) == [], "invisible until committed"
    assert committed_offsets(settings, partitions=[2]) == {2: -1001}
    assert outputs.commit(9)
    assert committed_offsets(settings, partitions=[2]) == {2: 9}
    # An aborted transaction (a crash before its commit) shows nothing.
    outputs.publish([DlqRecord(9, b"card-2", b"{lost", "value: not valid JSON")], [])
    outputs.close()
    restarted = outputs_for(settings, 2)
    assert restarted.committed == 9, "a restart skips every output before offset 9"
    restarted.close()

    (dlq,) = list(read_topic(settings, PAYMENTS_DLQ))
    assert (dlq.key(), dlq.value()) == (b"card-1", b"{broken")
    assert dict(dlq.headers()) == {
        "error": b"value: not valid JSON",
        "source.topic": PAYMENTS_TRANSACTIONS.encode(),
        "source.partition": b"2",
        "source.offset": b"7",
    }
    (alert,) = list(read_topic(settings, PAYMENTS_ALERTS))
    assert alert.value() == b'{"alert_id":"a1"}'
    assert dict(alert.headers())["alert.id"] == b"a1"


def test_closed_or_dropped_outputs_free_their_kafka_clients(kafka_settings: Settings) -> None:
    """Nothing (their watchdog thread above all) keeps the outputs of a flow that ended
    alive: in a process that runs flows one after another, their transactional producer
    would go on reconnecting to a broker that may be long gone."""
    import gc
    import weakref

    settings = flow_settings(kafka_settings)
    closed, dropped = outputs_for(settings, 4), outputs_for(settings, 5)
    refs = [weakref.ref(closed), weakref.ref(dropped)]
    closed.publish([DlqRecord(1, b"k", b"v", "value: bad")], [])
    assert closed.commit(2)
    closed.close()
    del closed, dropped  # one closed, one never closed (a flow that failed)
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


def test_a_transaction_holding_alerts_is_due_at_once_dead_letters_wait(
    kafka_settings: Settings,
) -> None:
    """Alerts are what someone waits for: their transaction is due as soon as it holds
    one; dead letters and the offset alone wait MAX_OPEN_S (fewer commits)."""
    settings = flow_settings(kafka_settings)
    outputs = outputs_for(settings, 3)
    try:
        assert not outputs.due(), "nothing open"
        outputs.publish([DlqRecord(4, b"card-9", b"{bad", "value: not valid JSON")], [])
        assert not outputs.due(), "dead letters alone wait"
        time.sleep(MAX_OPEN_S)
        assert outputs.due(), "...at most MAX_OPEN_S"
        assert outputs.commit(5)
        outputs.publish(
            [],
            [AlertRecord("a9", "velocity", "card-9", "t9", 0, 0, 1.0, "{}", 6, b'{"a":9}')],
        )
        assert outputs.due(), "an alert is due at once"
        assert outputs.commit(7)
        assert not outputs.due()
    finally:
        outputs.close()
    assert committed_offsets(settings, partitions=[3]) == {3: 7}
    assert [m.value() for m in read_topic(settings, PAYMENTS_ALERTS)] == [b'{"a":9}']


def test_a_commit_covers_what_its_transaction_holds_and_a_hold_sends_nothing(
    kafka_settings: Settings,
) -> None:
    """The lake's flush thread commits with the sink's mark, which can lag a batch the
    worker just published: the commit must still cover that batch (a replay would
    publish it twice). While held (the lake full), nothing is sent or committed."""
    settings = flow_settings(kafka_settings)
    outputs = outputs_for(settings, 4)
    try:
        outputs.publish([DlqRecord(10, b"k", b"{a", "value: bad")], [], through=12)
        assert outputs.commit(9)
        assert outputs.committed == 12
        outputs.hold()
        outputs.publish([DlqRecord(13, b"k", b"{b", "value: bad")], [], through=14)
        assert not outputs.due() and not outputs.commit(14), "held"
        assert committed_offsets(settings, partitions=[4]) == {4: 12}
        outputs.release()
        assert outputs.commit(14)
    finally:
        outputs.close()
    assert committed_offsets(settings, partitions=[4]) == {4: 14}
    assert [m.value() for m in read_topic(settings, PAYMENTS_DLQ)] == [b"{a", b"{b"]


def test_a_new_instance_fences_the_old_one(kafka_settings: Settings) -> None:
    settings = flow_settings(kafka_settings)
    old = outputs_for(settings, 1)
    old.publish([DlqRecord(1, b"k", b"old", "value: bad")], [])
    new = outputs_for(settings, 1)  # init_transactions with the same transactional.id
    with pytest.raises(ProducerFenced, match="another instance of the flow took it over"):
        old.commit(2)
    new.publish([DlqRecord(1, b"k", b"new", "value: bad")], [])
    new.commit(2)
    new.close()
    assert [m.value() for m in read_topic(settings, PAYMENTS_DLQ)] == [b"new"]
    assert committed_offsets(settings, partitions=[1]) == {1: 2}


def run_by_hand(
    settings: Settings, module: str, flow: str, *args: str
) -> subprocess.CompletedProcess:
    """``python -m <module> <flow> [args]`` with the settings, to its end, as a person would."""
    return subprocess.run(
        [sys.executable, "-m", module, flow, *args],
        env={**os.environ, **settings_env(settings)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_second_copy_started_during_a_run_stops_and_duplicates_nothing(
    kafka_settings: Settings,
) -> None:
    """The operator mistake: `riverbed flow run` deployed, and a plain bytewax.run by hand."""
    settings = flow_settings(kafka_settings)
    events = generate(20_000, seed=12)
    log = settings.home / "flow.log"
    first = start_flow(settings, log)
    try:
        produce(settings, events[:10_000])
        wait_until(lambda: bool(read_status(flow_dir(settings))), 60, "a flush", first, log)
        second = run_by_hand(settings, "bytewax.run", "flows.payments:get_flow()")
        assert second.returncode != 0
        assert "the payments flow is already running here (pid" in second.stderr, second.stderr
        produce(settings, events[10_000:])
        wait_until(drained(settings), 120, "the first copy to drain the topic", first, log)
    finally:
        stop_flow(first)

    valid = {e.transaction_id for e in events if e.valid}
    rows = query(f"select transaction_id from {scan(settings, 'transactions')}")
    assert Counter(r[0] for r in rows) == Counter(valid)
    dlq = Counter(m.value() for m in read_topic(settings, PAYMENTS_DLQ))
    assert dlq == Counter(e.value for e in events if not e.valid)
    alerts = Counter(
        json.loads(m.value())["alert_id"] for m in read_topic(settings, PAYMENTS_ALERTS)
    )
    assert alerts and max(alerts.values()) == 1, "no alert published twice"


def test_a_flow_over_a_missing_topic_stops_saying_what_to_do_without_a_traceback(
    kafka_settings: Settings,
) -> None:
    settings = flow_settings(kafka_settings)
    run = run_by_hand(settings, "flows.run", "flows.payments:get_flow(topic_prefix='absent.')")
    assert run.returncode != 0
    assert "topic 'absent.payments.transactions' is not available" in run.stderr, run.stderr
    assert "riverbed topics apply" in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_more_workers_than_partitions_stops_saying_how_many_at_most(
    kafka_settings: Settings,
) -> None:
    settings = flow_settings(kafka_settings)
    partitions = len(end_offsets(settings))
    run = run_by_hand(settings, "flows.run", "flows.payments:get_flow()", "-w", str(partitions + 1))
    assert run.returncode != 0
    assert f"{partitions + 1} workers for the {partitions} partitions" in run.stderr, run.stderr
    assert f"run at most {partitions}" in run.stderr and "Traceback" not in run.stderr


def test_a_copy_on_another_host_is_fenced_by_kafka_and_delta(kafka_settings: Settings) -> None:
    """No shared lock: a second copy with its own RIVERBED_HOME writing the same lake (as
    a second host with the lake on shared storage would). The newer copy's
    init_transactions and window-table take-over fence the older one, which says so and
    stops before its next lake commit."""
    settings = flow_settings(kafka_settings, log_level="INFO")
    other = settings.model_copy(update={"home": settings.home / "other"})
    other.home.mkdir(parents=True)
    settings.lake_dir.mkdir(parents=True)
    other.lake_dir.symlink_to(settings.lake_dir)
    events = generate(20_000, seed=13)
    old_log, new_log = settings.home / "old.log", settings.home / "new.log"
    old = start_flow(settings, old_log, recovery=False)
    new: list[subprocess.Popen] = []
    try:
        produce(settings, events[:10_000])
        wait_until(lambda: bool(read_status(flow_dir(settings))), 60, "a flush", old, old_log)
        new = start_flow(other, new_log, recovery=False)
        # The newer copy has taken every partition over (its producers' init, its lake
        # writers' take-over) once it flushed; only then comes input that both copies
        # read. (Produced earlier, the older copy could finish it before the take-over
        # and then never write again: nothing to fence.)
        wait_until(lambda: bool(read_status(flow_dir(other))), 180, "a flush", new, new_log)
        produce(settings, events[10_000:])
        deadline = time.monotonic() + 60
        while old[0].poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        # It stops at once, as flows.run makes a fenced copy do (not after unwinding
        # every partition's close through Bytewax).
        assert old[0].returncode == FENCED_EXIT, (
            f"the older copy exited {old[0].returncode}, or kept running (None); its log:\n"
            f"{log_tail(old_log)}\n"
            f"the newer copy's log:\n{log_tail(new_log)}"
        )
        # Whichever comes first fences it: the Kafka side (the newer producers' init) or
        # the lake side (the newer window writer's generation).
        assert "fenced, stopping: " in old_log.read_text(), old_log.read_text()[-3000:]
        wait_until(drained(settings), 120, "the newer copy to drain the topic", new, new_log)
    finally:
        stop_flow(old + new)

    # The newer copy starts with empty state (no recovery store of its own yet), so a
    # resend whose original it never saw is taken as new: compare Kafka records, not ids.
    valid = {e.transaction_id for e in events if e.valid}
    rows = query(
        f"select _partition, _offset, transaction_id from {scan(settings, 'transactions')}"
    )
    assert Counter((p, o) for p, o, _t in rows).most_common(1)[0][1] == 1, "a record twice"
    assert {t for _p, _o, t in rows} == valid
    dlq = Counter(m.value() for m in read_topic(settings, PAYMENTS_DLQ))
    assert dlq == Counter(e.value for e in events if not e.valid)
    headers = [dict(m.headers()) for m in read_topic(settings, PAYMENTS_ALERTS)]
    published = Counter((h["source.partition"], h["source.offset"], h["alert.id"]) for h in headers)
    assert published and max(published.values()) == 1, "an alert published twice"
