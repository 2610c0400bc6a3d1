"""The IoT dataflow under bytewax.testing: readings in, lake and Kafka outputs out.

The lake is real (DuckDB reads it back); Kafka is recorded (tests/integration/
test_flow_iot.py covers it). Every expectation is an oracle from
:mod:`tests.support.iot_recording`, computed from the input with polars or plain
Python: the valid first-seen readings and their lateness, the hopping device windows,
the room interval join, and the anomalies the input was built to contain.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from bytewax.testing import cluster_main, run_main

from flows.iot import SPEC, build_flow
from flows.iot.config import IotConfig
from flows.iot.flow import device_window, room_state
from flows.kit.lake_commits import LakeCommitter
from flows.kit.lake_sink import LakePartitionedSink, LakePartitionSink
from flows.kit.records import SourceBatch
from flows.kit.upsert_sink import Settled, UpsertSink, UpsertSinkPartition
from riverbed import lake
from tests.support.batch_source import BatchSource
from tests.support.iot_recording import (
    DEVICES,
    DROPPED,
    FLATLINE,
    PER_DEVICE,
    oracle_readings,
    oracle_rooms,
    oracle_windows,
    recording,
)
from tests.support.recording_outputs import RecordingOutputs

TOPIC = "iot.readings"
PARTITIONS = 4
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
US = 1_000_000
CONFIG = IotConfig(flatline_readings=FLATLINE)


def as_batches(messages: list[tuple[bytes, bytes]], size: int) -> tuple[list[SourceBatch], dict]:
    ts_ms = int((T0 + timedelta(hours=2)).timestamp() * 1000)
    parts: dict[int, list] = defaultdict(list)
    for key, value in messages:
        p = zlib.crc32(key) % PARTITIONS
        parts[p].append((len(parts[p]), key, value, ts_ms))
    batches = []
    longest = max(len(r) for r in parts.values())
    for start in range(0, longest, size):
        for p, recs in sorted(parts.items()):
            chunk = recs[start : start + size]
            if chunk:
                batches.append(SourceBatch(p, chunk, chunk[-1][0] + 1))
    # The end: every partition caught up and idle (the source ticks empty ones too).
    batches += [SourceBatch(p, [], len(parts[p]), True, True) for p in range(PARTITIONS)]
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

    def upserts(target):
        return UpsertSink(
            target.dataset,
            lambda: UpsertSinkPartition(
                target, lake_dir=lake_dir, flush_interval_s=60, status=None
            ),
        )

    return build_flow(
        config=CONFIG,
        partitions=list(range(PARTITIONS)),
        source=BatchSource(TOPIC, batches),
        partition_sink=LakePartitionedSink(
            topic=TOPIC, partitions=list(range(PARTITIONS)), make_partition=make
        ),
        window_sink=upserts(device_window(TOPIC)),
        room_sink=upserts(room_state(TOPIC)),
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_the_iot_flow_lands_readings_windows_rooms_and_anomalies(
    tmp_path: Path, workers: int
) -> None:
    messages, planted = recording(T0)
    batches, parts = as_batches(messages, 97)
    outputs: dict[int, RecordingOutputs] = {}
    flow = flow_for(batches, tmp_path, outputs)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)

    con = duckdb.connect(config=lake.duckdb_config())

    def scan(ds: str) -> str:
        return lake.scan_sql(tmp_path, ds, "iot")

    readings = oracle_readings(parts)
    assert readings.height == DEVICES * PER_DEVICE - DROPPED
    stored = con.sql(f"select reading_id, late from {scan('readings')}").fetchall()
    assert len(stored) == len({r for r, _ in stored}) == readings.height
    assert set(stored) == set(readings.select("reading_id", "late").iter_rows())
    assert readings["late"].sum() > 3, "the test must exercise lateness"
    assert sum(len(o.dlq) for o in outputs.values()) == planted["invalid"]

    windows = con.sql(
        f"""select device_id, epoch_us(window_start), reading_count, co2_ppm_count,
                   co2_ppm_max, round(light_lux_mean, 6)
            from {scan("device_window")}"""
    ).fetchall()
    assert len(windows) == len({(w[0], w[1]) for w in windows})
    assert set(windows) == oracle_windows(readings)

    rooms = con.sql(
        f"select room_id, reading_id, light_lux, humidity_pct, occupied from {scan('room_state')}"
    ).fetchall()
    expected = oracle_rooms(readings)
    assert {(r[0], r[1]): (r[2], r[3], r[4]) for r in rooms} == expected
    assert len(rooms) == len(expected)
    assert sum(1 for v in expected.values() if v[2]) > 100, "occupied anchors exist"
    assert any(v[0] is None for v in expected.values()), "the dropout leaves anchors unmatched"

    anomalies = [a for o in outputs.values() for a in o.alerts]
    by_rule = defaultdict(set)
    for a in anomalies:
        by_rule[a.rule].add((a.device_id, a.reading_id, a.metric))
    assert by_rule["range"] == {("r1-climate", "r1-climate-77", "temperature_c")}
    assert by_rule["flatline"] == {("r2-climate", "r2-climate-61", "humidity_pct")}
    assert by_rule["dropout"] == {("r1-light", "r1-light-130", None)}
    assert not by_rule["baseline"], "no device has a baseline in this test"
    lake_anomalies = con.sql(f"select count(*) from {scan('anomalies')}").fetchall()
    assert lake_anomalies == [(len(anomalies),)]


def test_the_rows_before_a_quiet_spell_are_marked_to_be_written_at_once(tmp_path: Path) -> None:
    """An idle partition's device windows, and the room rows joined once every partition
    is idle, reach their upsert sinks as Settled (written at once, not at the end of the
    flush interval); the rows of the busy stream before do not."""
    messages, _planted = recording(T0)
    batches, _parts = as_batches(messages, 97)
    seen: dict[str, list[bool]] = {"device_window": [], "room_state": []}

    def recording_upserts(target):
        class Recording(UpsertSinkPartition):
            def write_batch(self, values: list) -> None:
                seen[target.dataset].extend(isinstance(v, Settled) for v in values)
                super().write_batch(values)

        return UpsertSink(
            target.dataset,
            lambda: Recording(target, lake_dir=tmp_path, flush_interval_s=60, status=None),
        )

    committer = LakeCommitter(tmp_path, TOPIC, SPEC.datasets)
    flow = build_flow(
        config=CONFIG,
        partitions=list(range(PARTITIONS)),
        source=BatchSource(TOPIC, batches),
        partition_sink=LakePartitionedSink(
            topic=TOPIC,
            partitions=list(range(PARTITIONS)),
            make_partition=lambda p: LakePartitionSink(
                committer=committer,
                topic=TOPIC,
                partition=p,
                outputs=RecordingOutputs(),
                flush_interval_s=60,
                flush_rows=3000,
                status=None,
            ),
        ),
        window_sink=recording_upserts(device_window(TOPIC)),
        room_sink=recording_upserts(room_state(TOPIC)),
    )
    run_main(flow)

    windows, rooms = seen["device_window"], seen["room_state"]
    # The input ends with one idle batch per partition, each flushing what its open
    # windows hold (when they hold something new): at most one Settled per partition,
    # and the windows closed while the stream was busy are not.
    assert 1 <= sum(windows) <= PARTITIONS
    assert len(windows) > PARTITIONS
    # The partitions go idle one after another; only the last one makes them all idle.
    assert rooms[-1] is True, "the join's last rows, once every partition is idle"
    assert sum(rooms) == 1
