"""The sinks' flush order, their idempotence on replay and their fencing, without Kafka.

The lake is real (Delta tables in tmp_path); the Kafka side is a recording stand-in
(the real transactional producer is tested in tests/integration/test_kafka_outputs.py).
"""

from __future__ import annotations

import errno
import json
import logging
import time
from pathlib import Path

import duckdb
import pytest

from flows.kit import lake_outage
from flows.kit.lake_commits import LakeCommitter
from flows.kit.lake_sink import LakePartitionSink
from flows.kit.records import Counts, DlqRecord, ProcessedBatch
from flows.kit.status import StatusBoard, read_status
from flows.kit.upsert_sink import Settled, UpsertSinkPartition
from flows.payments import SPEC
from flows.payments.flow import merchant_minute
from flows.payments.records import AlertRecord, MerchantMinuteRow, TxnColumns
from riverbed import lake

TOPIC = "payments.transactions"
DAY_US = 86_400_000_000
T0 = 20_000 * DAY_US + 3_600_000_000  # 2024-10-04 01:00 UTC


class Outputs:
    """Records what the sink asks of Kafka, in order."""

    def __init__(self, log: list[str], committed: int = 0, lake_dir: Path | None = None) -> None:
        self.log = log
        self.committed = committed
        self.lake_dir = lake_dir  # set: each commit also logs how many rows the lake had
        self.dlq: list[int] = []
        self.alerts: list[str] = []
        self.open = False

    def publish(
        self, dlq: list[DlqRecord], alerts: list[AlertRecord], through: int | None = None
    ) -> int:
        self.open = True
        self.dlq += [r.offset for r in dlq]
        self.alerts += [a.alert_id for a in alerts]
        self.log += [f"dlq {r.offset}" for r in dlq] + [f"alert {a.alert_id}" for a in alerts]
        return len(dlq) + len(alerts)

    def due(self) -> bool:
        return self.open

    def commit(self, next_offset: int) -> bool:
        if not self.open and next_offset <= self.committed:
            return False
        self.open = False
        self.committed = max(self.committed, next_offset)
        self.log.append(f"commit {next_offset}")
        if self.lake_dir is not None:
            self.log.append(f"lake had {len(lake_offsets(self.lake_dir))}")
        return True

    def hold(self) -> None:
        self.log.append("hold")

    def release(self) -> None:
        pass

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
             T0 + day * DAY_US + o, False, o, T0 // 1000),
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
    committed: int = 0,
    status: StatusBoard | None = None,
    partition: int = 3,
    committer: LakeCommitter | None = None,
) -> tuple[LakePartitionSink, Outputs]:
    outputs = Outputs(log, committed, lake_dir)
    return (
        LakePartitionSink(
            committer=committer or LakeCommitter(lake_dir, TOPIC, SPEC.datasets),
            topic=TOPIC,
            partition=partition,
            outputs=outputs,
            flush_interval_s=3600,
            flush_rows=10_000,
            status=status,
        ),
        outputs,
    )


def query(lake_dir: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(config=lake.duckdb_config())
    return con.sql(
        sql.format(**{ds: lake.scan_sql(lake_dir, ds) for ds in lake.SCHEMAS})
    ).fetchall()


def lake_offsets(lake_dir: Path, dataset: str = "transactions") -> list[int]:
    return [r[0] for r in query(lake_dir, f"select _offset from {{{dataset}}} order by 1")]


def versions(lake_dir: Path, dataset: str = "transactions") -> dict[int, int]:
    return lake.stored_offsets(lake.open_table(lake_dir, dataset), TOPIC, range(8))


def test_the_lake_commits_first_then_kafka_with_its_offsets(tmp_path: Path) -> None:
    log: list[str] = []
    s, _outputs = sink(tmp_path, log)
    s.write_batch([processed(range(0, 12), invalid=(5,))])
    assert log[:3] == ["dlq 5", "alert a0", "alert a10"], "into the transaction at once"
    assert lake_offsets(tmp_path) == []
    s.snapshot()
    assert log[3:] == ["commit 12", "lake had 11"], "the group offset follows the lake"
    assert lake_offsets(tmp_path) == [o for o in range(12) if o != 5]
    assert lake_offsets(tmp_path, "alerts") == [0, 10]
    assert versions(tmp_path) == {3: 12} and versions(tmp_path, "alerts") == {3: 12}
    before = lake.summary(tmp_path, "transactions")
    s.snapshot()
    assert log[-2] == "commit 12" and lake.summary(tmp_path, "transactions") == before, (
        "nothing new: no second commit on either side"
    )


def test_a_replay_skips_what_the_lake_and_the_topics_already_have(tmp_path: Path) -> None:
    first, _o = sink(tmp_path, [])
    first.write_batch([processed(range(0, 20), invalid=(3, 13))])
    first.flush()
    # Restart: the lake has 0..19, the Kafka side only got to 15 (its offset commit
    # of the last transaction was lost), and the replay covers 10..30.
    log: list[str] = []
    again, outputs = sink(tmp_path, log, committed=15)
    again.write_batch([processed(range(10, 30), invalid=(13, 23))])
    again.flush()
    assert outputs.dlq == [23] and outputs.alerts == ["a20"], "13 and a10 are out already"
    assert lake_offsets(tmp_path) == [o for o in range(30) if o not in (3, 13, 23)]
    assert lake_offsets(tmp_path, "alerts") == [0, 10, 20]
    assert versions(tmp_path) == {3: 30}


def test_a_full_disk_holds_kafka_and_retries_the_same_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The storage fails (as a full disk does: pyarrow raises OSError 28) for the first
    # three data files; the flow must wait, commit nothing meanwhile, then land it once.
    monkeypatch.setattr(lake_outage, "FIRST_PAUSE_S", 0.01)
    write_file = lake._write_file
    failures = iter(range(3))

    def full_then_free(*args: object) -> object:
        if next(failures, None) is not None:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_file(*args)

    monkeypatch.setattr(lake, "_write_file", full_then_free)
    log: list[str] = []
    s, _outputs = sink(tmp_path, log)
    s.write_batch([processed(range(0, 12), invalid=(5,))])
    with caplog.at_level(logging.INFO, logger="riverbed"):
        s.snapshot()
    assert log[3:] == ["hold", "commit 12", "lake had 11"], "no Kafka commit before the lake"
    assert lake_offsets(tmp_path) == [o for o in range(12) if o != 5]
    assert versions(tmp_path) == {3: 12}
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(said) == 1 and "no space left on device" in said[0] and "free space" in said[0]
    assert any("lake writable again" in r.getMessage() for r in caplog.records)


def test_a_commit_that_landed_before_a_later_step_failed_is_not_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # delta-rs writes a checkpoint after every hundredth commit; on a full disk the
    # commit lands and the checkpoint fails, and the call raises.
    create = lake.TableWriter._create_write_transaction
    failed: list[bool] = []

    def commit_then_fail(self: lake.TableWriter, *args: object) -> None:
        create(self, *args)
        if self.dataset == "transactions" and not failed:
            failed.append(True)
            raise OSError("Kernel error: ... No space left on device (os error 28)")

    s, _outputs = sink(tmp_path, [])
    monkeypatch.setattr(lake.TableWriter, "_create_write_transaction", commit_then_fail)
    s.write_batch([processed(range(0, 12))])
    s.flush()
    s.write_batch([processed(range(12, 20))])
    s.flush()
    assert failed and lake_offsets(tmp_path) == list(range(20)), "each row once"
    assert versions(tmp_path) == {3: 20}


def test_one_commit_per_dataset_for_every_partition_of_a_process(tmp_path: Path) -> None:
    committer = LakeCommitter(tmp_path, TOPIC, SPEC.datasets)
    sinks = [sink(tmp_path, [], partition=p, committer=committer)[0] for p in (0, 1, 2)]
    started = lake.summary(tmp_path, "transactions").version  # created, taken over
    for i, s in enumerate(sinks):
        batch = processed(range(0, 10 + i))
        batch.partition = s.partition
        s.write_batch([batch])
    for s in sinks:
        s.snapshot()  # the first one commits all three; the others find nothing new
    assert lake.summary(tmp_path, "transactions").version == started + 1, "one commit"
    assert versions(tmp_path) == {0: 10, 1: 11, 2: 12}


def test_a_second_writer_of_the_same_partitions_is_fenced(tmp_path: Path) -> None:
    old, _o = sink(tmp_path, [])
    new, _n = sink(tmp_path, [])
    new.write_batch([processed(range(0, 5))])
    new.flush()
    old.write_batch([processed(range(0, 8))])
    with pytest.raises(lake.FencedWriter, match="another copy of the flow took over"):
        old.flush()
    assert lake_offsets(tmp_path) == [0, 1, 2, 3, 4], "the stale writer wrote nothing"


def test_the_status_file_is_written_on_flush(tmp_path: Path) -> None:
    board = StatusBoard(tmp_path / "flows" / "status.json", flow="payments", process_id=None)
    s, _o = sink(tmp_path, [], status=board)
    s.write_batch([processed(range(0, 12), invalid=(5,))])
    s.flush()
    (status,) = read_status(tmp_path / "flows")
    assert status["processed"] == 12
    assert status["committed_offsets"] == {f"{TOPIC}/3": 12}
    assert status["lake_commits"] == {"alerts": 1, "transactions": 1}
    assert status["rows_committed"] == {"alerts": 2, "transactions": 11}
    assert status["pid"] > 0 and status["updated_at"]
    assert not list((tmp_path / "flows").glob(".*")), "written through a temporary file"
    assert json.loads((tmp_path / "flows" / "status.json").read_text()) == status


def window(merchant: str, minute: int, count: int) -> MerchantMinuteRow:
    start = T0 + minute * 60_000_000
    return MerchantMinuteRow(
        merchant, start, start + 60_000_000, count, 100 * count, 100, 100, count, 0
    )


def window_sink(lake_dir: Path) -> UpsertSinkPartition:
    return UpsertSinkPartition(
        merchant_minute(TOPIC), lake_dir=lake_dir, flush_interval_s=3600, status=None
    )


def stored_windows(lake_dir: Path) -> list[tuple]:
    return query(
        lake_dir,
        "select merchant_id, epoch_us(window_start), txn_count from {merchant_minute} "
        "order by 2, 1",
    )


def test_windows_are_upserted_one_row_each_and_never_move_back(tmp_path: Path) -> None:
    first = window_sink(tmp_path)
    first.write_batch([[window("a", 0, 1), window("b", 0, 2)], [window("a", 1, 3)]])
    first.snapshot()
    # A restart replays: a is emitted again, once corrected (4), once as before (3).
    again = window_sink(tmp_path)
    again.write_batch([[window("a", 1, 4)], [window("a", 1, 3), window("a", 2, 5)]])
    again.snapshot()
    again.write_batch([[window("b", 0, 1)]])  # an older emission of b, replayed late
    again.snapshot()
    m = 60_000_000
    assert stored_windows(tmp_path) == [
        ("a", T0, 1),
        ("b", T0, 2),
        ("a", T0 + m, 4),
        ("a", T0 + 2 * m, 5),
    ]


def test_a_stale_window_writer_is_fenced(tmp_path: Path) -> None:
    old = window_sink(tmp_path)
    new = window_sink(tmp_path)
    new.write_batch([[window("a", 0, 2)]])
    new.snapshot()
    old.write_batch([[window("a", 0, 9)]])
    with pytest.raises(lake.FencedWriter):
        old.snapshot()
    assert stored_windows(tmp_path) == [("a", T0, 2)]


def test_a_flush_behind_the_worker_lands_while_it_goes_on(tmp_path: Path) -> None:
    log: list[str] = []
    s, _outputs = sink(tmp_path, log)
    s.write_batch([processed(range(0, 10), invalid=(4,))])
    s.flush(behind=True)
    # The worker goes on meanwhile: this batch is staged for the next flush.
    s.write_batch([processed(range(10, 20))])
    s.committer.wait()
    assert lake_offsets(tmp_path) == [o for o in range(10) if o != 4]
    assert versions(tmp_path) == {3: 10}
    s.snapshot()  # in place, after the one behind
    assert lake_offsets(tmp_path) == [o for o in range(20) if o != 4]
    assert versions(tmp_path) == {3: 20}
    commits = [line for line in log if line.startswith("commit")]
    assert commits[-1] == "commit 20", "each flush's Kafka commit after its lake commit"


def test_a_stale_writer_flushing_behind_is_stopped_at_its_next_call(tmp_path: Path) -> None:
    old, _o = sink(tmp_path, [])
    new, _n = sink(tmp_path, [])
    new.write_batch([processed(range(0, 5))])
    new.flush()
    old.write_batch([processed(range(0, 8))])
    old.flush(behind=True)  # fails on the committer's thread...
    with pytest.raises(lake.FencedWriter, match="another copy of the flow took over"):
        old.snapshot()  # ...and says so in the worker
    assert lake_offsets(tmp_path) == [0, 1, 2, 3, 4], "the stale writer wrote nothing"


def test_a_partition_taken_over_while_a_flush_runs_behind_does_not_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bytewax builds a partition's sink when it first needs it, possibly while another
    # partition's flush runs behind; both commit to the same Delta tables.
    write_file = lake._write_file

    def slow(*args: object) -> object:
        time.sleep(0.5)  # the flush is still running when the take-over comes
        return write_file(*args)

    monkeypatch.setattr(lake, "_write_file", slow)
    committer = LakeCommitter(tmp_path, TOPIC, SPEC.datasets)
    first, _o = sink(tmp_path, [], partition=0, committer=committer)
    batch = processed(range(0, 2000))
    batch.partition = 0
    first.write_batch([batch])
    first.flush(behind=True)
    second, _s = sink(tmp_path, [], partition=1, committer=committer)  # a take-over commit
    # The take-over waited for the flush: never two commits to one table at once (a
    # fresh-clone run saw delta-rs refuse one as a concurrent transaction).
    assert versions(tmp_path) == {0: 2000}
    second.snapshot()
    assert versions(tmp_path) == {0: 2000}


def test_the_committer_lets_closed_sinks_go_and_leaves_shared_with_the_last(
    tmp_path: Path,
) -> None:
    """A process that runs flows one after another (the tests do) must not keep each
    closed flow's sinks, and with them their Kafka clients, alive through the committer."""
    import gc
    import weakref

    committer = LakeCommitter.shared(tmp_path, TOPIC, SPEC.datasets)
    log: list[str] = []
    first, first_outputs = sink(tmp_path, log, partition=1, committer=committer)
    second, _ = sink(tmp_path, log, partition=2, committer=committer)
    first.write_batch([processed(range(0, 10))])
    second.write_batch([processed(range(0, 5))])
    gone = weakref.ref(first_outputs)

    first.close()
    del first, first_outputs
    gc.collect()
    assert gone() is None, "the committer still holds the closed sink's outputs"
    assert LakeCommitter.shared(tmp_path, TOPIC, SPEC.datasets) is committer
    # The open sink goes on as before.
    log.clear()
    second.write_batch([processed(range(5, 8))])
    second.flush()
    assert [e for e in log if e.startswith("commit")] == ["commit 8"]

    second.close()
    assert LakeCommitter.shared(tmp_path, TOPIC, SPEC.datasets) is not committer
    assert versions(tmp_path) == {1: 10, 2: 8}


def test_the_end_of_a_backlog_flushes_at_once_live_batches_wait_for_the_interval(
    tmp_path: Path,
) -> None:
    committer = LakeCommitter(tmp_path, TOPIC, SPEC.datasets)
    sinks = [sink(tmp_path, [], partition=p, committer=committer)[0] for p in (0, 1)]

    def write(s: LakePartitionSink, offsets: range, *, caught_up: bool, backlog: bool) -> None:
        batch = processed(offsets)
        batch.partition, batch.caught_up, batch.backlog = s.partition, caught_up, backlog
        s.write_batch([batch])
        committer.wait()

    # Live traffic: both partitions caught up, no full batch; the hour's interval is
    # not up and 10,000 rows are not staged, so nothing is committed.
    write(sinks[0], range(0, 10), caught_up=True, backlog=False)
    write(sinks[1], range(0, 10), caught_up=True, backlog=False)
    assert versions(tmp_path) == {}
    # A backlog: both read full batches; partition 0 catches up while partition 1 is
    # still behind (no flush), then partition 1 catches up: that flush is due at once.
    write(sinks[0], range(10, 20), caught_up=False, backlog=True)
    write(sinks[1], range(10, 20), caught_up=False, backlog=True)
    write(sinks[0], range(20, 25), caught_up=True, backlog=False)
    assert versions(tmp_path) == {}, "partition 1 is still behind"
    write(sinks[1], range(20, 22), caught_up=True, backlog=False)
    assert versions(tmp_path) == {0: 25, 1: 22}
    # Back to live: the next caught-up batch waits for the interval again.
    write(sinks[0], range(25, 30), caught_up=True, backlog=False)
    assert versions(tmp_path) == {0: 25, 1: 22}


def test_windows_held_by_the_upsert_sink_are_written_at_a_partition_sinks_tick(
    tmp_path: Path,
) -> None:
    """Windows arrive now and then; the last ones before a quiet spell must not wait for
    the next window or the next recovery snapshot: the partition sinks' ticks flush them."""
    committer = LakeCommitter(tmp_path, TOPIC, SPEC.datasets)
    partition, _outputs = sink(tmp_path, [], committer=committer)
    windows = UpsertSinkPartition(
        merchant_minute(TOPIC), lake_dir=tmp_path, flush_interval_s=0.3, status=None
    )
    committer.on_tick(windows.flush_if_due)
    windows.write_batch([[window("a", 0, 1)]])  # the interval is not up: held
    partition.write_batch([processed(range(0, 0))])  # a tick, too early
    assert not lake.table_exists(tmp_path, "merchant_minute") or stored_windows(tmp_path) == []
    time.sleep(0.35)
    partition.write_batch([processed(range(0, 0))])  # a tick: nothing else arrived
    assert stored_windows(tmp_path) == [("a", T0, 1)]


def test_settled_rows_are_written_at_once(tmp_path: Path) -> None:
    windows = window_sink(tmp_path)  # an hour's interval
    windows.write_batch([[window("a", 0, 1)]])
    assert not lake.table_exists(tmp_path, "merchant_minute") or stored_windows(tmp_path) == []
    windows.write_batch([Settled([window("b", 0, 2)])])
    assert stored_windows(tmp_path) == [("a", T0, 1), ("b", T0, 2)]
