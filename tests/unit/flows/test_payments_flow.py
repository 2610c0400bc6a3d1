"""The whole dataflow under bytewax.testing: generated input in, lake and Kafka outputs out.

Kafka is replaced by recording outputs here (the Kafka side is covered by the
integration tests); the lake is real, and DuckDB reads it back.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from bytewax.testing import cluster_main, run_main

from flows.kit.lake_commits import LakeCommitter
from flows.kit.lake_sink import LakePartitionedSink, LakePartitionSink
from flows.kit.records import SourceBatch
from flows.kit.upsert_sink import UpsertSink, UpsertSinkPartition
from flows.payments import SPEC, build_flow
from flows.payments.config import FlowConfig
from flows.payments.flow import merchant_minute
from producers.payments import GeneratedEvent, GeneratorConfig, PaymentsGenerator
from riverbed import lake
from tests.support.batch_source import BatchSource
from tests.support.recording_outputs import RecordingOutputs

TOPIC = "payments.transactions"
PARTITIONS = 4
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def generated(n: int, seed: int = 3) -> list[GeneratedEvent]:
    gen = PaymentsGenerator(GeneratorConfig(), seed=seed, start=time.time() - n / 200, rate=200)
    events = []
    for event in gen:
        events.append(event)
        if len(events) == n:
            return events
    raise AssertionError


def as_batches(events: list[GeneratedEvent], size: int) -> tuple[list[SourceBatch], dict]:
    """Partition by key like a keyed producer; batches interleaved across partitions,
    then one idle tick per partition (the end of the input)."""
    now_ms = int(time.time() * 1000)
    parts: dict[int, list] = defaultdict(list)
    for e in events:
        p = zlib.crc32(e.key) % PARTITIONS
        parts[p].append((len(parts[p]), e.key, e.value, now_ms))
    batches = []
    for start in range(0, max(len(r) for r in parts.values()), size):
        for p, recs in sorted(parts.items()):
            chunk = recs[start : start + size]
            if chunk:
                batches.append(SourceBatch(p, chunk, chunk[-1][0] + 1))
    batches += [SourceBatch(p, [], len(parts[p]), True, True) for p in sorted(parts)]
    return batches, parts


def flow_for(batches: list[SourceBatch], lake_dir: Path, outputs: dict[int, RecordingOutputs]):
    committer = LakeCommitter(lake_dir, TOPIC, SPEC.datasets)

    def make(p: int) -> LakePartitionSink:
        outputs[p] = RecordingOutputs()
        return LakePartitionSink(
            committer=committer,
            topic=TOPIC,
            partition=p,
            outputs=outputs[p],
            flush_interval_s=60,
            flush_rows=3000,
            status=None,
        )

    return build_flow(
        config=FlowConfig(),
        partitions=list(range(PARTITIONS)),
        source=BatchSource(TOPIC, batches),
        partition_sink=LakePartitionedSink(
            topic=TOPIC, partitions=list(range(PARTITIONS)), make_partition=make
        ),
        window_sink=UpsertSink(
            "merchant_minute",
            lambda: UpsertSinkPartition(
                merchant_minute(TOPIC), lake_dir=lake_dir, flush_interval_s=60, status=None
            ),
        ),
    )


def expected_windows(parts: dict, events: list[GeneratedEvent], alerted: dict[str, int]) -> set:
    """merchant_minute from the input: valid first copies, not late in their partition."""
    truth = {e.value: e for e in events}

    groups: dict[tuple, list] = defaultdict(list)
    seen: set[str] = set()
    for _p, recs in sorted(parts.items()):
        latest = None
        for _o, _k, value, _ts in recs:
            event = truth[value]
            if not event.valid or event.transaction_id in seen:
                continue
            seen.add(event.transaction_id)
            body = json.loads(value)
            when = datetime.fromisoformat(body["event_time"].replace("Z", "+00:00"))
            t = (when - EPOCH) // timedelta(microseconds=1)
            on_time = latest is None or t >= latest - 30_000_000
            latest = t if latest is None else max(latest, t)
            if on_time:
                key = (body["merchant_id"], t - t % 60_000_000)
                groups[key].append((Decimal(str(body["amount"])), body["card_id"], event))
    out = set()
    for (merchant, start), members in groups.items():
        amounts = [a for a, _c, _e in members]
        out.add(
            (
                merchant,
                start,
                len(members),
                sum(amounts),
                min(amounts),
                max(amounts),
                len({c for _a, c, _e in members}),
                sum(alerted.get(e.transaction_id, 0) for *_x, e in members),
            )
        )
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_the_flow_lands_everything_once(tmp_path: Path, workers: int) -> None:
    events = generated(12_000)
    batches, parts = as_batches(events, 700)
    outputs: dict[int, RecordingOutputs] = {}
    flow = flow_for(batches, tmp_path, outputs)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)

    valid_first = {e.transaction_id for e in events if e.valid}
    con = duckdb.connect(config=lake.duckdb_config())
    scan = lake.scan_sql(tmp_path, "transactions")
    ids = [r[0] for r in con.sql(f"select transaction_id from {scan}").fetchall()]
    assert len(ids) == len(set(ids)) == len(valid_first)
    assert set(ids) == valid_first
    invalid = sum(1 for e in events if not e.valid)
    assert sum(len(o.dlq) for o in outputs.values()) == invalid
    alerts = [a for o in outputs.values() for a in o.alerts]
    assert alerts and len({a.alert_id for a in alerts}) == len(alerts)
    lake_alerts = con.sql(f"select count(*) from {lake.scan_sql(tmp_path, 'alerts')}").fetchall()
    assert lake_alerts == [(len(alerts),)]
    for p, o in outputs.items():
        assert o.commits[-1] == len(parts[p]), "the group offset covers the whole partition"

    # Alerts count in their transaction's window; one transaction may raise two.
    alerted: dict[str, int] = defaultdict(int)
    for a in alerts:
        alerted[a.transaction_id] += 1
    rows = con.sql(
        f"""select merchant_id, epoch_us(window_start), txn_count, amount_sum, amount_min,
                   amount_max, distinct_cards, alert_count
            from {lake.scan_sql(tmp_path, "merchant_minute")}"""
    ).fetchall()
    expected = expected_windows(parts, events, alerted)
    assert len(rows) == len({(r[0], r[1]) for r in rows}), "one row per merchant and window"
    assert set(rows) == expected
