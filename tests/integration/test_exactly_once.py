"""Exactly-once under kill -9, against the real broker.

~200,000 generated transactions (valid, invalid, late, resent, fraud) are
produced while the flow runs with recovery; the flow is SIGKILLed at random
moments at least three times and restarted each time, then runs until it has
caught up. The result must be as if nothing had happened:

* every valid transaction is in the lake's committed files exactly once;
* every invalid message is in the DLQ exactly once, bytes unchanged;
* the alerts (topic and lake) are those of an uninterrupted run of the same
  logic over the same input (the partition processors run in this process);
* merchant_minute equals an aggregation of the input computed here with DuckDB;
* the consumer group's offsets are at the end of the topic.

Runs with ``RIVERBED_TEST_BOOTSTRAP=host:port`` against an existing broker, or
with the session broker of ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from flows.config import FlowConfig
from flows.payments import ensure_recovery_store, flow_commands, flow_dir, settings_env
from flows.processor import PartitionProcessor
from flows.records import AlertRecord, SourceBatch
from producers.kafka_loop import PRODUCER_DEFAULTS
from producers.payments import GeneratedEvent, GeneratorConfig, PaymentsGenerator
from riverbed import lake
from riverbed.settings import Settings, load_settings
from riverbed.topics import PAYMENTS_ALERTS, PAYMENTS_DLQ, PAYMENTS_TRANSACTIONS

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EVENTS = 200_000
PRODUCE_SECONDS = 30.0
KILLS = 4
SEED = 20261125
EVENT_RATE = 200.0  # events per second of event time (what 5,000 cards carry)

Record = tuple[int, int, bytes | None, bytes | None, int]  # partition, offset, key, value, ts


# -- input ------------------------------------------------------------------------------


def generate(n: int, seed: int) -> list[GeneratedEvent]:
    span = n / EVENT_RATE
    start = time.time() - span - 120  # all event times in the past: none is "future"
    generator = PaymentsGenerator(GeneratorConfig(), seed=seed, start=start, rate=EVENT_RATE)
    events = []
    for event in generator:
        events.append(event)
        if len(events) == n:
            return events
    raise AssertionError("generator ended early")


def produce_paced(settings: Settings, events: list[GeneratedEvent], seconds: float) -> None:
    producer = Producer({**settings.kafka_client_config(), **PRODUCER_DEFAULTS})
    failures: list[str] = []

    def report(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    began = time.monotonic()
    chunk = 1000
    for i in range(0, len(events), chunk):
        for event in events[i : i + chunk]:
            while True:
                try:
                    producer.produce(
                        PAYMENTS_TRANSACTIONS, event.value, event.key, on_delivery=report
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
        due = began + seconds * (i + chunk) / len(events)
        time.sleep(max(0.0, due - time.monotonic()))
    assert producer.flush(60) == 0
    assert not failures, failures[:3]


def read_topic(settings: Settings, topic: str) -> Iterator:
    """Every message of a topic, partition by partition, in offset order."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "test.readback",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, p, low)])
            position = low
            while position < high:
                for msg in consumer.consume(10_000, 0.1):
                    assert msg.error() is None, msg.error()
                    position = msg.offset() + 1
                    yield msg
            consumer.unassign()
    finally:
        consumer.close()


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": "test.readback"})
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in parts
        }
    finally:
        consumer.close()


def committed_offsets(settings: Settings, topic: str, partitions: list[int]) -> dict[int, int]:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": settings.consumer_group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=30)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


# -- running the flow -----------------------------------------------------------------


def start_flow(settings: Settings, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, **settings_env(settings)}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            flow_commands(settings, recovery=True)[0],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )


def stop_flow(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"flow exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


# -- the reference: the same logic, uninterrupted, in this process ---------------------


def reference_alerts(records: list[Record], config: FlowConfig) -> list[AlertRecord]:
    by_partition: dict[int, list[Record]] = {}
    for r in records:
        by_partition.setdefault(r[0], []).append(r)
    alerts: list[AlertRecord] = []
    for p, recs in sorted(by_partition.items()):
        processor = PartitionProcessor(p, config)
        for i in range(0, len(recs), 5000):
            chunk = recs[i : i + 5000]
            raw = [(o, k, v, ts) for _p, o, k, v, ts in chunk]
            out = processor.process(SourceBatch(p, raw, chunk[-1][1] + 1), 0)
            alerts.extend(out.batch.alerts)
    return alerts


def alert_fact(alert_id: str, rule: str, card: str, txn: str, event_us: int, score: float,
               details: str) -> tuple:  # fmt: skip
    return (alert_id, rule, card, txn, event_us, round(score, 6), details)


# -- the test ---------------------------------------------------------------------------


def test_exactly_once_through_sigkills(kafka_settings: Settings, tmp_path: Path) -> None:
    settings = load_settings(
        kafka_bootstrap=kafka_settings.bootstrap_servers,
        home=kafka_settings.home,
        # Flushes more often than snapshots (every 1 s): a replay then re-sends rows the
        # lake already has, which the sinks must skip.
        flush_interval_s=0.4,
        flush_rows=3000,
        log_level="INFO",  # flow.log then tells what each restart resumed from and skipped
    )
    rng = random.Random(SEED)
    events = generate(EVENTS, SEED)
    log = tmp_path / "flow.log"
    ensure_recovery_store(settings)

    producing = threading.Thread(
        target=produce_paced, args=(settings, events, PRODUCE_SECONDS), daemon=True
    )
    producing.start()
    time.sleep(1.0)  # the flow starts on a topic that already has data in every partition

    kills = 0
    status_file = flow_dir(settings) / "status.json"
    while kills < KILLS or producing.is_alive():
        proc = start_flow(settings, log)
        if kills == 0:
            # The first kill right after the first flush committed offsets, which is
            # before Bytewax's first snapshot: the restart must not resume at them.
            wait_until(status_file.exists, 60, "the first flush", proc, log)
        else:
            time.sleep(rng.uniform(2.0, 8.0))
        assert proc.poll() is None, log.read_text()[-4000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
        with open(log, "a") as f:
            f.write(f"\n==== SIGKILL {kills} ====\n")
        time.sleep(rng.uniform(0.0, 1.0))
    producing.join()

    # Read the input back as the broker stored it: the truth to compare with.
    records: list[Record] = [
        (m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1])
        for m in read_topic(settings, PAYMENTS_TRANSACTIONS)
    ]
    assert len(records) == EVENTS
    ends = end_offsets(settings, PAYMENTS_TRANSACTIONS)
    partitions = sorted(ends)
    config = FlowConfig.from_settings(settings)
    truth = {e.value: e for e in events}
    alerts = reference_alerts(records, config)
    expected_windows = expected_merchant_minute(records, truth, config, alerts)

    proc = start_flow(settings, log)
    try:
        wait_until(
            lambda: committed_offsets(settings, PAYMENTS_TRANSACTIONS, partitions) == ends,
            120,
            "the group offsets to reach the end of the topic",
            proc,
            log,
        )
        wait_until(
            lambda: lake_window_count(settings) >= len(expected_windows),
            60,
            "every window to close",
            proc,
            log,
        )
        time.sleep(1.5)  # one more flush: anything still to come would show up now
    finally:
        stop_flow(proc)
    assert kills >= 3

    check_transactions(settings, records, truth)
    check_dlq(settings, records, truth)
    check_alerts(settings, alerts)
    check_merchant_minute(settings, expected_windows)
    check_manifest(settings)
    status = json.loads((flow_dir(settings) / "status.json").read_text())
    assert status["committed_offsets"] == {
        f"{PAYMENTS_TRANSACTIONS}/{p}": ends[p] for p in partitions
    }


# -- checks ------------------------------------------------------------------------------


def _scan(settings: Settings, dataset: str) -> str:
    return lake.scan_sql(settings.lake_dir, dataset)


def lake_window_count(settings: Settings) -> int:
    scan = _scan(settings, "merchant_minute")
    query = f"select count(distinct (merchant_id, window_start)) from {scan}"
    return duckdb.sql(query).fetchall()[0][0]


def first_valid_offsets(
    records: list[Record], truth: dict[bytes | None, GeneratedEvent]
) -> dict[tuple[int, int], GeneratedEvent]:
    """(partition, offset) of each valid transaction's first copy."""
    seen: set[str] = set()
    out = {}
    for p, o, _k, v, _ts in sorted(records, key=lambda r: (r[0], r[1])):
        event = truth[v]
        if not event.valid or event.transaction_id in seen:
            continue
        seen.add(event.transaction_id)
        out[(p, o)] = event
    return out


def check_transactions(
    settings: Settings, records: list[Record], truth: dict[bytes | None, GeneratedEvent]
) -> None:
    rows = duckdb.sql(
        f"select _partition, _offset, transaction_id from {_scan(settings, 'transactions')}"
    ).fetchall()
    where = Counter((p, o) for p, o, _t in rows)
    dupes = [k for k, n in where.items() if n > 1]
    assert not dupes, f"{len(dupes)} offsets twice in the lake, e.g. {dupes[:5]}"
    ids = Counter(t for _p, _o, t in rows)
    assert max(ids.values()) == 1, "a transaction_id is in the lake twice"
    expected = first_valid_offsets(records, truth)
    missing = set(expected) - set(where)
    extra = set(where) - set(expected)
    assert not missing, f"{len(missing)} valid transactions missing, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} unexpected rows, e.g. {sorted(extra)[:5]}"
    for p, o, t in rows[:1000]:
        assert expected[(p, o)].transaction_id == t


def check_dlq(
    settings: Settings, records: list[Record], truth: dict[bytes | None, GeneratedEvent]
) -> None:
    source = {(p, o): (k, v) for p, o, k, v, _ts in records}
    invalid = {(p, o) for p, o, _k, v, _ts in records if not truth[v].valid}
    seen: Counter[tuple[int, int]] = Counter()
    for msg in read_topic(settings, PAYMENTS_DLQ):
        headers = dict(msg.headers() or ())
        assert headers["source.topic"] == PAYMENTS_TRANSACTIONS.encode()
        assert headers["error"], "a DLQ message without a reason"
        where = (int(headers["source.partition"]), int(headers["source.offset"]))
        seen[where] += 1
        assert (msg.key(), msg.value()) == source[where], f"DLQ bytes differ at {where}"
    dupes = [k for k, n in seen.items() if n > 1]
    assert not dupes, f"{len(dupes)} invalid messages in the DLQ twice, e.g. {dupes[:5]}"
    assert set(seen) == invalid, (
        f"DLQ: {len(invalid - set(seen))} missing, {len(set(seen) - invalid)} unexpected"
    )


def check_alerts(settings: Settings, reference: list[AlertRecord]) -> None:
    expected = {
        alert_fact(a.alert_id, a.rule, a.card_id, a.transaction_id, a.event_us, a.score, a.details)
        for a in reference
    }
    assert len(expected) == len(reference) > 100
    published: Counter[tuple] = Counter()
    for msg in read_topic(settings, PAYMENTS_ALERTS):
        body = json.loads(msg.value())
        assert msg.key() == body["card_id"].encode()
        fact = alert_fact(
            body["alert_id"], body["rule"], body["card_id"], body["transaction_id"],
            _micros(body["event_time"]), body["score"], body["details"],
        )  # fmt: skip
        published[fact] += 1
    dupes = [k for k, n in published.items() if n > 1]
    assert not dupes, f"{len(dupes)} alerts published twice, e.g. {dupes[:3]}"
    assert set(published) == expected, (
        f"alerts topic: {len(expected - set(published))} missing, "
        f"{len(set(published) - expected)} unexpected"
    )
    rows = duckdb.sql(
        f"select alert_id, rule, card_id, transaction_id, epoch_us(event_time), score, details "
        f"from {_scan(settings, 'alerts')}"
    ).fetchall()
    in_lake = Counter(alert_fact(*r) for r in rows)
    assert max(in_lake.values()) == 1, "an alert is in the lake twice"
    assert set(in_lake) == expected


def _micros(rfc3339: str) -> int:
    moment = datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def expected_merchant_minute(
    records: list[Record],
    truth: dict[bytes | None, GeneratedEvent],
    config: FlowConfig,
    reference: list[AlertRecord],
) -> list[tuple]:
    """merchant_minute from the input alone, in DuckDB: valid first copies, not late
    (older than the partition's latest event time so far minus the allowed lateness)."""
    valid = first_valid_offsets(records, truth)
    table = pa.table(
        {
            "p": [p for p, _o in valid],
            "o": [o for _p, o in valid],
            "value": [v.decode() for p, o, _k, v, _ts in records if (p, o) in valid],
        }
    )
    # Same order as `valid` (both follow the sorted records).
    table = table.sort_by([("p", "ascending"), ("o", "ascending")])
    alerts = pa.table({"transaction_id": [a.transaction_id for a in reference]})
    con = duckdb.connect()
    con.register("input", table)
    con.register("alert_txns", alerts)
    window_us = config.window_us
    lateness_us = config.allowed_lateness_us
    return con.sql(
        f"""
        with parsed as (
            select p, o,
                   json_extract_string(value, '$.transaction_id') as transaction_id,
                   json_extract_string(value, '$.merchant_id') as merchant_id,
                   json_extract_string(value, '$.card_id') as card_id,
                   cast(json_extract_string(value, '$.amount') as decimal(18, 2)) as amount,
                   epoch_us(cast(json_extract_string(value, '$.event_time') as timestamptz))
                       as event_us
            from input
        ),
        judged as (
            select *,
                   max(event_us) over (
                       partition by p order by o
                       rows between unbounded preceding and 1 preceding
                   ) as latest_before
            from parsed
        ),
        on_time as (
            select * from judged
            where latest_before is null or event_us >= latest_before - {lateness_us}
        ),
        alerted as (
            select transaction_id, count(*) as n from alert_txns group by transaction_id
        )
        select merchant_id,
               (event_us // {window_us}) * {window_us} as window_start_us,
               count(*) as txn_count,
               sum(amount) as amount_sum,
               min(amount) as amount_min,
               max(amount) as amount_max,
               count(distinct card_id) as distinct_cards,
               coalesce(sum(alerted.n), 0)::bigint as alert_count
        from on_time left join alerted using (transaction_id)
        group by all
        order by all
        """
    ).fetchall()


def check_merchant_minute(settings: Settings, expected: list[tuple]) -> None:
    rows = duckdb.sql(
        f"""
        select merchant_id, epoch_us(window_start), txn_count, amount_sum, amount_min,
               amount_max, distinct_cards, alert_count, amount_mean
        from {_scan(settings, "merchant_minute")}
        qualify revision = max(revision) over (partition by merchant_id, window_start)
        order by all
        """
    ).fetchall()
    keys = Counter((r[0], r[1]) for r in rows)
    assert max(keys.values()) == 1, "a window's latest revision is in the lake twice"
    for r in rows:
        assert abs(r[-1] - float(r[3]) / r[2]) < 1e-9, f"amount_mean of {r}"
    got, want = {r[:-1] for r in rows}, set(expected)
    assert got == want, (
        f"merchant_minute: {len(want - got)} expected rows missing/different, "
        f"{len(got - want)} unexpected, e.g. {sorted(want - got)[:2]} vs {sorted(got - want)[:2]}"
    )


def check_manifest(settings: Settings) -> None:
    for dataset in lake.SCHEMAS:
        files = {
            p.relative_to(settings.lake_dir).as_posix()
            for p in lake.committed_files(settings.lake_dir, dataset)
        }
        entries = lake.read_manifest(settings.lake_dir, dataset)
        listed = Counter(e["path"] for e in entries)
        assert max(listed.values(), default=1) == 1, f"{dataset}: a file listed twice"
        assert set(listed) == files, f"{dataset}: manifest and files differ"
        rows = duckdb.sql(f"select count(*) from {_scan(settings, dataset)}").fetchall()[0][0]
        assert sum(e["rows"] for e in entries) == rows
