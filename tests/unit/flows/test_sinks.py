"""The sinks' flush order and their idempotence on replay, without Kafka."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from flows.kafka_outputs import Delivered
from flows.lake_sink import LakePartitionSink, SinkState, txn_table
from flows.records import (
    AlertRecord,
    Counts,
    DlqRecord,
    MerchantMinuteRow,
    ProcessedBatch,
    TxnColumns,
)
from flows.status import StatusBoard, read_status
from flows.window_sink import WindowSinkPartition
from riverbed import lake

TOPIC = "payments.transactions"
DAY_US = 86_400_000_000
T0 = 20_000 * DAY_US + 3_600_000_000  # 2024-10-04 01:00 UTC


class Outputs:
    """Records what the sink asks of Kafka, in order."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.dlq: list[int] = []
        self.alerts: list[str] = []

    def produce_dlq(self, records: list[DlqRecord]) -> int:
        self.dlq += [r.offset for r in records]
        self.log += [f"dlq {r.offset}" for r in records]
        return len(records)

    def produce_alerts(self, alerts: list[AlertRecord]) -> int:
        self.alerts += [a.alert_id for a in alerts]
        self.log += [f"alert {a.alert_id}" for a in alerts]
        return len(alerts)

    def confirm(self) -> None:
        self.log.append("confirm")

    def commit(self, next_offset: int, flushed_at: float) -> None:
        self.log.append(f"commit {next_offset}")

    def committed_flush_time(self) -> float | None:
        return 1234.0

    def close(self) -> None:
        self.log.append("close")


def processed(offsets: range, *, day: int = 0, invalid: tuple[int, ...] = ()) -> ProcessedBatch:
    txns = TxnColumns()
    for o in offsets:
        if o in invalid:
            continue
        for column, value in zip(
            txns.columns(),
            (f"tx-{o}", "c", "m", "5411", 100 + o, "EUR", "FR", 1.0, 2.0, "pos",
             T0 + day * DAY_US + o, False, o),
            strict=True,
        ):  # fmt: skip
            column.append(value)
    alerts = [
        AlertRecord(f"a{o}", "velocity", "c", f"tx-{o}", T0 + day * DAY_US, 0, 1.0, "{}", o, b"{}")
        for o in offsets
        if o % 10 == 0 and o not in invalid
    ]
    dlq = [DlqRecord(o, b"k", b"v", "amount: bad") for o in offsets if o in invalid]
    return ProcessedBatch(3, offsets.stop, txns, alerts, dlq, Counts(processed=len(offsets)))


def sink(
    lake_dir: Path,
    log: list[str],
    *,
    delivered: Delivered | None = None,
    resume: SinkState | None = None,
    status: StatusBoard | None = None,
) -> tuple[LakePartitionSink, Outputs, list]:
    outputs = Outputs(log)
    asked: list = []

    def load(since: float | None) -> Delivered:
        asked.append(since)
        return delivered or Delivered()

    return (
        LakePartitionSink(
            lake_dir=lake_dir,
            topic=TOPIC,
            partition=3,
            outputs=outputs,
            load_delivered=load,
            flush_interval_s=3600,
            flush_rows=10_000,
            status=status,
            resume_state=resume,
        ),
        outputs,
        asked,
    )


def lake_offsets(lake_dir: Path, dataset: str = "transactions") -> list[int]:
    scan = lake.scan_sql(lake_dir, dataset)
    return [r[0] for r in duckdb.sql(f"select _offset from {scan} order by 1").fetchall()]


def test_a_flush_confirms_kafka_then_writes_the_lake_then_commits(tmp_path: Path) -> None:
    log: list[str] = []
    s, _outputs, _ = sink(tmp_path, log)
    s.write_batch([processed(range(0, 12), invalid=(5,))])
    assert log == ["dlq 5", "alert a0", "alert a10"], "published at once, before any flush"
    assert lake_offsets(tmp_path) == []
    state = s.snapshot()
    assert log[3:] == ["confirm", "commit 12"]
    assert isinstance(state, SinkState)
    assert lake_offsets(tmp_path) == [o for o in range(12) if o != 5]
    assert lake_offsets(tmp_path, "alerts") == [0, 10]
    s.snapshot()
    assert log[-1] == "confirm", "nothing new: no second commit"


def test_a_replay_skips_what_the_lake_and_the_topics_already_have(tmp_path: Path) -> None:
    first, _o, _ = sink(tmp_path, [])
    first.write_batch([processed(range(0, 20), invalid=(3, 13))])
    first.flush()
    # Restart; the replay covers 10..30. Offsets 10..19 are in the lake; the DLQ has
    # 13 and the alerts topic a10 (read back from Kafka).
    log: list[str] = []
    again, outputs, asked = sink(
        tmp_path,
        log,
        delivered=Delivered(dlq_offsets={13}, alert_ids={"a10"}),
        resume=SinkState(flushed_at=99.0),
    )
    again.write_batch([processed(range(10, 30), invalid=(13, 23))])
    again.flush()
    assert asked == [99.0], "read back from the snapshot's flush time"
    assert outputs.dlq == [23] and outputs.alerts == ["a20"]
    assert lake_offsets(tmp_path) == [o for o in range(30) if o not in (3, 13, 23)]
    assert lake_offsets(tmp_path, "alerts") == [0, 10, 20]


def test_the_high_water_is_per_day(tmp_path: Path) -> None:
    # A crash between the two files of one flush: day 1's file exists, day 0's does not.
    lake.LakeWriter(tmp_path).write_partition_rows(
        "transactions",
        txn_table(processed(range(5, 8), day=1).txns, TOPIC, 3),
        topic=TOPIC,
        partition=3,
    )
    s, _o, _ = sink(tmp_path, [])
    s.write_batch([processed(range(0, 8), day=0), processed(range(5, 8), day=1)])
    s.flush()
    assert lake_offsets(tmp_path) == [0, 1, 2, 3, 4, 5, 5, 6, 6, 7, 7]


def test_without_a_snapshot_the_commit_metadata_says_since_when(tmp_path: Path) -> None:
    s, _o, asked = sink(tmp_path, [])
    s.write_batch([processed(range(0, 3), invalid=(1,))])
    assert asked == [1234.0]


def test_the_status_file_is_written_on_flush(tmp_path: Path) -> None:
    board = StatusBoard(tmp_path / "flows" / "status.json", flow="payments", process_id=None)
    s, _o, _ = sink(tmp_path, [], status=board)
    s.write_batch([processed(range(0, 12), invalid=(5,))])
    s.flush()
    (status,) = read_status(tmp_path / "flows")
    assert status["processed"] == 12
    assert status["committed_offsets"] == {f"{TOPIC}/3": 12}
    assert status["files_committed"] == {"alerts": 1, "transactions": 1}
    assert status["rows_committed"] == {"alerts": 2, "transactions": 11}
    assert status["pid"] > 0 and status["updated_at"]
    assert not list((tmp_path / "flows").glob(".*")), "written through a temporary file"
    assert json.loads((tmp_path / "flows" / "status.json").read_text()) == status


def window(merchant: str, minute: int, count: int, revision: int = 0) -> MerchantMinuteRow:
    start = T0 + minute * 60_000_000
    return MerchantMinuteRow(
        merchant, start, start + 60_000_000, count, 100 * count, 100, 100, count, 0, revision
    )


def test_the_window_sink_skips_rows_already_in_the_lake(tmp_path: Path) -> None:
    first = WindowSinkPartition(
        lake_dir=tmp_path, flush_interval_s=3600, retention_us=3_600_000_000, status=None
    )
    first.write_batch([[window("a", 0, 1), window("b", 0, 2)], [window("a", 1, 3)]])
    first.snapshot()
    again = WindowSinkPartition(
        lake_dir=tmp_path, flush_interval_s=3600, retention_us=3_600_000_000, status=None
    )
    again.write_batch([[window("a", 1, 3), window("a", 1, 4, revision=1), window("a", 2, 5)]])
    again.snapshot()
    scan = lake.scan_sql(tmp_path, "merchant_minute")
    rows = duckdb.sql(
        f"select merchant_id, txn_count, revision from {scan} "
        "order by window_start, merchant_id, revision"
    ).fetchall()
    assert rows == [("a", 1, 0), ("b", 2, 0), ("a", 3, 0), ("a", 4, 1), ("a", 5, 0)]
    assert all(e["ranges"] == [] for e in lake.read_manifest(tmp_path, "merchant_minute"))


def test_a_file_renamed_before_its_manifest_line_is_listed_on_replay(tmp_path: Path) -> None:
    first, _o, _ = sink(tmp_path, [])
    first.write_batch([processed(range(0, 10))])
    first.flush()
    first.write_batch([processed(range(10, 20))])
    first.flush()
    # The crash came between the second file's rename and its manifest line; a torn
    # line was left behind.
    manifest = lake.manifest_path(tmp_path, "transactions")
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text(lines[0] + '{"path": "payments/tra')
    leftover = next(tmp_path.rglob("p03-000000000010-*.parquet")).parent / ".p03-x.parquet.tmp"
    leftover.write_bytes(b"half")

    again, _o, _ = sink(tmp_path, [])
    again.write_batch([processed(range(10, 25))])
    again.flush()
    entries = lake.read_manifest(tmp_path, "transactions")
    assert [e["path"].rsplit("/", 1)[1] for e in entries] == [
        "p03-000000000000-000000000009.parquet",
        "p03-000000000010-000000000019.parquet",
        "p03-000000000020-000000000024.parquet",
    ]
    assert entries[1]["ranges"] == [
        {"topic": TOPIC, "partition": 3, "first_offset": 10, "last_offset": 19}
    ]
    assert lake_offsets(tmp_path) == list(range(25))
    assert not leftover.exists()


def test_the_window_sink_lists_a_file_its_crash_left_unlisted(tmp_path: Path) -> None:
    first = WindowSinkPartition(
        lake_dir=tmp_path, flush_interval_s=3600, retention_us=3_600_000_000, status=None
    )
    first.write_batch([[window("a", 0, 1)]])
    first.snapshot()
    lake.manifest_path(tmp_path, "merchant_minute").write_text("")
    again = WindowSinkPartition(
        lake_dir=tmp_path, flush_interval_s=3600, retention_us=3_600_000_000, status=None
    )
    again.write_batch([[window("a", 0, 1), window("a", 1, 2)]])
    again.snapshot()
    entries = lake.read_manifest(tmp_path, "merchant_minute")
    assert len(entries) == 2 and sum(e["rows"] for e in entries) == 2
