"""bench.state_bench's pure parts: the populations run, reading a recovery store, the flow's
snapshot log lines."""

from __future__ import annotations

import logging
import pickle
import sqlite3
from pathlib import Path

from bench.state_bench import (
    Population,
    SnapshotLog,
    counts,
    header,
    latest_snapshots,
    measure_store,
    populations,
)
from flows.kit.processing import PartitionState
from flows.payments.config import FlowConfig
from flows.payments.fraud import CardState
from flows.payments.processor import PartitionProcessor
from flows.payments.windows import WindowMerger
from riverbed.logs import LogfmtFormatter

# Bytewax 0.21's table of snapshots, as `python -m bytewax.recovery` creates it.
SNAPS = """CREATE TABLE snaps (
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    step_id TEXT NOT NULL,
    state_key TEXT NOT NULL,
    snap_epoch INTEGER NOT NULL,
    ser_change BLOB,
    PRIMARY KEY (step_id, state_key, snap_epoch)
) STRICT"""


def test_counts_read_a_comma_list() -> None:
    assert counts("10000, 1e5,1000000") == [10_000, 100_000, 1_000_000]
    assert counts("") == []


def test_cards_then_merchants_each_at_the_others_default() -> None:
    runs = populations([10, 20], [1, 5], default_cards=20, default_merchants=5, rate=200)
    assert runs == [
        Population(10, 5, 200),
        Population(20, 5, 200),  # listed twice (cards 20 at merchants 5), run once
        Population(20, 1, 200),
    ]


def test_the_dense_rate_adds_the_most_cards_once_more() -> None:
    runs = populations([10, 30], [], 20, 5, rate=200, dense_rate=1000)
    assert runs[-1] == Population(30, 5, 1000)
    assert populations([10], [], 20, 5, rate=200, dense_rate=200) == [Population(10, 5, 200)]


def test_header_right_aligns_every_column() -> None:
    assert header(("a", "b")) == "| a | b |\n|---:|---:|"


def test_the_newest_snapshot_of_each_key_counts(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "part-0.sqlite3")
    conn.execute(SNAPS)
    rows = [
        ("p.process", "t/0", 3, b"old"),
        ("p.process", "t/0", 4, b"newest"),
        ("p.process", "t/1", 2, b"one"),
        ("p.read", "t/0", 4, None),  # discarded
    ]
    conn.executemany(
        "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?, ?, ?, ?)", rows
    )
    assert latest_snapshots(conn) == {
        ("p.process", "t/0"): (4, b"newest"),
        ("p.process", "t/1"): (2, b"one"),
        ("p.read", "t/0"): (4, None),
    }


def test_a_store_is_measured_by_its_newest_snapshots(tmp_path: Path) -> None:
    config = FlowConfig()
    processor = PartitionProcessor(0, config)
    for i in range(3):
        card = processor.cards[f"card-{i}"] = CardState()
        card.seen(f"tx-{i}a", 1_000_000, config)
        card.seen(f"tx-{i}b", 2_000_000, config)
    processor.windows.add(1_000_000, "merch-1", "card-0", 500, 0)
    older = PartitionProcessor(0, config)
    older.cards["card-9"] = CardState()

    store = tmp_path / "recovery"
    store.mkdir()
    conn = sqlite3.connect(store / "part-0.sqlite3")
    conn.execute(SNAPS)
    blobs = {}
    for epoch, state in ((1, older), (2, processor)):
        # The source's snapshot holds the position and the pickled processor
        # (flows.kit.processing); Bytewax pickles that snapshot again.
        blobs[epoch] = pickle.dumps(PartitionState(42 + epoch, pickle.dumps(state)))
        conn.execute(
            "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?, ?, ?, ?)",
            ("payments.read", "t/0", epoch, blobs[epoch]),
        )
    merger = WindowMerger.for_partitions([0], config)
    conn.execute(
        "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?, ?, ?, ?)",
        ("payments.merge_windows", "w", 2, pickle.dumps(pickle.dumps(merger))),
    )
    conn.commit()
    conn.close()

    size = measure_store(store, tmp_path, config)
    assert (size.cards, size.resend_ids, size.open_windows, size.window_cards) == (3, 6, 1, 1)
    assert size.rows == 3
    assert set(size.blob_bytes) == {"payments.read", "payments.merge_windows"}
    assert size.blob_bytes["payments.read"] == len(blobs[2]), "the newest snapshot only"
    assert size.cards_bytes > 0
    assert size.file_bytes >= size.vacuumed_bytes > 0


def line(msg: str, created: float, **extra: object) -> str:
    record = logging.makeLogRecord({"name": "riverbed.flow", "msg": msg, "created": created})
    record.msecs = (created % 1) * 1000
    record.__dict__.update(extra)
    return LogfmtFormatter().format(record)


def test_the_snapshot_log_lines_are_summed_from_a_time_on() -> None:
    lines = [
        line("snapshot", 1000.0, state="PartitionProcessor", bytes=10, ms=5),
        line("snapshot", 1010.25, state="PartitionProcessor", bytes=30, ms=7),
        line("snapshot", 1010.5, state="WindowMerger", bytes=99, ms=2),
        line("flushed", 1011.0, part=0, commits="{'transactions': 3}", ms=40),
        line("rows upserted", 1012.0, dataset="merchant_minute", rows=3, ms=9),
    ]
    log = SnapshotLog.parse(lines, since=1005.0)
    assert (log.taken, log.ms, log.largest) == (2, 9.0, 30)
    assert log.first_at == 1010.25
