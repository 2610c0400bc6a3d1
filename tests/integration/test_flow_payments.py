"""The payments flow against the real broker: source, sinks, processes, restarts.

Uses ``kafka_settings`` from ``tests/conftest.py`` (the session broker, or the
cluster named by ``RIVERBED_TEST_BOOTSTRAP``): the declared topics, empty.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable

import duckdb
import pytest
from confluent_kafka import Producer

from flows.config import FlowConfig
from flows.kafka_outputs import Delivered, KafkaOutputs, delivered_since
from flows.kafka_source import KafkaPartitionedSource
from flows.payments import flow_dir
from flows.records import AlertRecord, DlqRecord, SourceBatch
from flows.status import read_status
from riverbed import lake
from riverbed.settings import Settings, load_settings
from riverbed.topics import PAYMENTS_ALERTS, PAYMENTS_DLQ, PAYMENTS_TRANSACTIONS
from tests.support.flow_harness import (
    committed_offsets,
    drained,
    generate,
    produce,
    read_records,
    read_topic,
    reference_alerts,
    run_until,
    scan,
)

pytestmark = pytest.mark.kafka


def flow_settings(kafka_settings: Settings, **overrides: object) -> Settings:
    return load_settings(
        kafka_bootstrap=kafka_settings.bootstrap_servers,
        home=kafka_settings.home,
        flush_interval_s=1.0,
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
    rows = duckdb.sql(f"select transaction_id from {scan(settings, 'transactions')}").fetchall()
    assert Counter(r[0] for r in rows) == Counter(valid)

    dlq = list(read_topic(settings, PAYMENTS_DLQ))
    invalid = {e.value for e in events if not e.valid}
    assert len(dlq) == len(invalid) and {m.value() for m in dlq} == invalid
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

    windows = duckdb.sql(
        f"select count(*), count(distinct (merchant_id, window_start)) "
        f"from {scan(settings, 'merchant_minute')}"
    ).fetchall()[0]
    assert windows[0] == windows[1], "no window emitted twice"


def window_total(settings: Settings) -> int:
    query = f"select coalesce(sum(txn_count), 0) from {scan(settings, 'merchant_minute')}"
    return duckdb.sql(query).fetchall()[0][0]


def on_time(settings: Settings) -> int:
    query = f"select count(*) from {scan(settings, 'transactions')} where not late"
    return duckdb.sql(query).fetchall()[0][0]


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
    rows = duckdb.sql(f"select transaction_id from {scan(settings, 'transactions')}").fetchall()
    assert Counter(r[0] for r in rows) == Counter(valid)
    dlq = Counter(m.value() for m in read_topic(settings, PAYMENTS_DLQ))
    assert dlq == Counter(e.value for e in first + second if not e.valid)
    manifest = lake.read_manifest(settings.lake_dir, "transactions")
    assert sum(e["rows"] for e in manifest) == len(valid)
    assert all(e["ranges"][0]["topic"] == PAYMENTS_TRANSACTIONS for e in manifest)


def test_the_source_batches_ticks_and_resumes(kafka_settings: Settings) -> None:
    settings = flow_settings(kafka_settings)
    source = KafkaPartitionedSource(
        settings, PAYMENTS_TRANSACTIONS, [0, 1], batch_size=3, tick_s=0.05, idle_after_s=0.3
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

    # No resume state and a committed group offset: start there.
    KafkaOutputs(
        settings,
        source_topic=PAYMENTS_TRANSACTIONS,
        partition=0,
        dlq_topic=PAYMENTS_DLQ,
        alerts_topic=PAYMENTS_ALERTS,
    ).commit(4, time.time())
    fresh = source.build_part("read", f"{PAYMENTS_TRANSACTIONS}/0", None)
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


def test_published_messages_are_found_again_after_a_restart(kafka_settings: Settings) -> None:
    settings = flow_settings(kafka_settings)
    before = time.time()
    outputs = KafkaOutputs(
        settings,
        source_topic=PAYMENTS_TRANSACTIONS,
        partition=2,
        dlq_topic=PAYMENTS_DLQ,
        alerts_topic=PAYMENTS_ALERTS,
    )
    outputs.produce_dlq([DlqRecord(7, b"card-1", b"{broken", "value: not valid JSON")])
    outputs.produce_alerts(
        [AlertRecord("a1", "velocity", "card-1", "tx-1", 0, 0, 1.0, "{}", 8, b'{"alert_id":"a1"}')]
    )
    outputs.confirm()
    outputs.commit(9, before)
    assert outputs.committed_flush_time() == pytest.approx(before)
    outputs.close()

    def found(partition: int, since: float | None) -> Delivered:
        return delivered_since(
            settings,
            source_topic=PAYMENTS_TRANSACTIONS,
            partition=partition,
            dlq_topic=PAYMENTS_DLQ,
            alerts_topic=PAYMENTS_ALERTS,
            since=since,
        )

    everything = found(2, None)
    assert everything.dlq_offsets == {7} and everything.alert_ids == {"a1"}
    assert found(2, before).dlq_offsets == {7}
    assert found(3, None).dlq_offsets == set(), "another partition's messages are not ours"
    later = found(2, time.time() + 3600)
    assert later.dlq_offsets == set() and later.alert_ids == set()

    (dlq,) = list(read_topic(settings, PAYMENTS_DLQ))
    assert (dlq.key(), dlq.value()) == (b"card-1", b"{broken")
    assert dict(dlq.headers()) == {
        "error": b"value: not valid JSON",
        "source.topic": PAYMENTS_TRANSACTIONS.encode(),
        "source.partition": b"2",
        "source.offset": b"7",
    }
