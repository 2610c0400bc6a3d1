"""The lake's Delta tables: layout, offsets in commits, fencing, upserts, upkeep.

Real Delta tables in tmp_path, written by delta-rs and read back by DuckDB's delta
extension and by polars, two readers independent of the writer.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from riverbed import lake
from tests.support.lake_fixture import T0, TOPIC, txns


def windows(counts: dict[str, int], minute: int = 0) -> pa.Table:
    start = T0 + minute * 60_000_000
    names = sorted(counts)
    return pa.table(
        {
            "merchant_id": names,
            "window_start": lake.utc_micros([start] * len(names)),
            "window_end": lake.utc_micros([start + 60_000_000] * len(names)),
            "txn_count": [counts[m] for m in names],
            "amount_sum": lake.money_from_cents([100 * counts[m] for m in names]),
            "amount_min": lake.money_from_cents([100] * len(names)),
            "amount_max": lake.money_from_cents([100] * len(names)),
            "amount_mean": [1.0] * len(names),
            "distinct_cards": [1] * len(names),
            "alert_count": [0] * len(names),
        }
    )


def duck(sql: str, lake_dir: Path) -> list[tuple]:
    con = lake.connect_duckdb()
    scans = {ds: lake.scan_sql(lake_dir, ds) for ds in lake.SCHEMAS}
    return con.sql(sql.format(**scans)).fetchall()


APP0, APP1 = lake.app_id(TOPIC, 0), lake.app_id(TOPIC, 1)


def claimed_writer(lake_dir: Path) -> lake.TableWriter:
    """A transactions writer that has claimed partition 0."""
    writer = lake.TableWriter(lake_dir, "transactions")
    writer.claim([APP0])
    return writer


def append_batches(writer: lake.TableWriter, batches: range) -> None:
    """One commit per batch ``i``: partition 0's offsets ``10 i`` to ``10 i + 9``."""
    for i in batches:
        writer.append(txns(range(i * 10, i * 10 + 10)), {APP0: i * 10 + 10})


def test_schemas_are_the_contract() -> None:
    assert lake.TRANSACTIONS_SCHEMA.names == [
        "transaction_id", "card_id", "merchant_id", "mcc", "amount", "currency", "country",
        "lat", "lon", "channel", "event_time", "late", "_topic", "_partition", "_offset",
    ]  # fmt: skip
    assert "revision" not in lake.MERCHANT_MINUTE_SCHEMA.names
    for dataset in lake.SCHEMAS:
        assert lake.table_schema(dataset).names[-1] == "event_date"


def test_an_append_records_its_offsets_in_the_same_commit(tmp_path: Path) -> None:
    writer = lake.TableWriter(tmp_path, "transactions")
    assert writer.claim([APP0, APP1]) == {APP0: None, APP1: None}
    rows = pa.concat_tables([txns(range(0, 5), 0), txns(range(0, 3), 1, day=1)])
    commit = writer.append(rows, {APP0: 5, APP1: 3})
    assert commit.rows == 8
    assert lake.summary(tmp_path, "transactions").version == 1  # version 0 created it
    table = lake.open_table(tmp_path, "transactions")
    assert lake.stored_offsets(table, TOPIC, [0, 1, 2]) == {0: 5, 1: 3}

    # Two readers that share no code with the writer see the same rows and partitions.
    assert duck(
        "select event_date, count(*) from {transactions} group by 1 order by 1", tmp_path
    ) == [
        (date(2024, 10, 4), 5),
        (date(2024, 10, 5), 3),
    ]
    frame = pl.read_delta(str(lake.dataset_dir(tmp_path, "transactions")))
    assert frame.height == 8 and set(frame["_offset"].to_list()) == {0, 1, 2, 3, 4}
    assert sorted(p.name for p in lake.dataset_dir(tmp_path, "transactions").iterdir()) == [
        "_delta_log",
        "event_date=2024-10-04",
        "event_date=2024-10-05",
    ]


def test_an_empty_append_only_moves_the_offsets(tmp_path: Path) -> None:
    claimed_writer(tmp_path).append(lake.TRANSACTIONS_SCHEMA.empty_table(), {APP0: 40})
    assert lake.stored_offsets(lake.open_table(tmp_path, "transactions"), TOPIC, [0]) == {0: 40}
    assert duck("select count(*) from {transactions}", tmp_path) == [(0,)]


def test_a_stale_writer_is_fenced_and_writes_nothing(tmp_path: Path) -> None:
    old = claimed_writer(tmp_path)
    new = claimed_writer(tmp_path)
    new.append(txns(range(0, 5)), {APP0: 5})
    with pytest.raises(lake.FencedWriter, match=r"another writer committed .*/0 up to 5"):
        old.append(txns(range(0, 7)), {APP0: 7})
    with pytest.raises(lake.FencedWriter, match="not newer than the stored 5"):
        new.append(txns(range(5, 5)), {APP0: 5})
    assert duck("select count(*) from {transactions}", tmp_path) == [(5,)]


def test_two_writers_racing_past_the_check_conflict_in_delta(tmp_path: Path) -> None:
    """The check is not atomic with the commit; delta-rs's conflict on the app id is."""
    first = claimed_writer(tmp_path)
    second = claimed_writer(tmp_path)
    first.append(txns(range(0, 5)), {APP0: 5})
    second.refresh = lambda: None  # type: ignore[method-assign]  # it checked just before
    with pytest.raises(lake.FencedWriter, match="same source partitions at the same time"):
        second.append(txns(range(0, 6)), {APP0: 6})
    assert duck("select count(*) from {transactions}", tmp_path) == [(5,)]


def test_the_newest_writer_takes_over_and_the_older_one_is_refused(tmp_path: Path) -> None:
    writer_app = lake.writer_app_id(TOPIC, 0)
    old = lake.TableWriter(tmp_path, "transactions")
    assert old.take_over([writer_app]) == {writer_app: 1}
    old.claim([APP0])
    old.append(txns(range(0, 3)), {APP0: 3})
    new = lake.TableWriter(tmp_path, "transactions")
    assert new.take_over([writer_app]) == {writer_app: 2}
    assert new.claim([APP0]) == {APP0: 3}
    with pytest.raises(lake.FencedWriter, match="another copy of the flow took over"):
        old.append(txns(range(3, 5)), {APP0: 5})
    new.append(txns(range(3, 6)), {APP0: 6})
    assert duck("select count(*), max(_offset) from {transactions}", tmp_path) == [(6, 5)]


def test_upserts_keep_one_row_per_window_and_never_move_back(tmp_path: Path) -> None:
    writer = lake.TableWriter(tmp_path, "merchant_minute")
    writer.take_over([f"{TOPIC}/windows"])
    keep_if = "s.txn_count >= t.txn_count"
    writer.upsert(windows({"a": 1, "b": 2}), {}, keep_if=keep_if)
    writer.upsert(windows({"a": 3, "b": 1}), {}, keep_if=keep_if)
    writer.upsert(windows({"c": 4}, minute=1), {}, keep_if=keep_if)
    rows = duck(
        "select merchant_id, epoch_us(window_start) - " + str(T0) + ", txn_count "
        "from {merchant_minute} order by 2, 1",
        tmp_path,
    )
    assert rows == [("a", 0, 3), ("b", 0, 2), ("c", 60_000_000, 4)]


def test_compaction_and_vacuum_keep_every_row_and_its_offsets(tmp_path: Path) -> None:
    append_batches(claimed_writer(tmp_path), range(20))
    before = lake.summary(tmp_path, "transactions")
    assert before is not None and before.files == 20 and before.rows == 200
    done = lake.compact(tmp_path, "transactions")
    assert (done.files_removed, done.files_added) == (20, 1)
    after = lake.summary(tmp_path, "transactions")
    assert after is not None and (after.files, after.rows) == (1, 200)
    # Replaced files stay for readers until they are older than the retention.
    assert lake.vacuum(tmp_path, "transactions", retention_hours=24) == []
    assert len(lake.vacuum(tmp_path, "transactions", retention_hours=0)) == 20
    assert duck("select count(distinct _offset) from {transactions}", tmp_path) == [(200,)]
    assert lake.stored_offsets(lake.open_table(tmp_path, "transactions"), TOPIC, [0]) == {0: 200}


def test_a_missing_table_reads_as_empty(tmp_path: Path) -> None:
    assert lake.summary(tmp_path, "alerts") is None
    assert lake.read_table(tmp_path, "alerts").schema == lake.table_schema("alerts")
    lake.open_table(tmp_path, "alerts")
    created = lake.summary(tmp_path, "alerts")
    assert created is not None and (created.version, created.files, created.rows) == (0, 0, 0)


def test_old_log_entries_and_tombstones_expire_and_vacuum_still_deletes_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lake's retention (an hour) made a second, and a checkpoint every 5 commits.
    monkeypatch.setitem(lake.TABLE_PROPERTIES, "delta.checkpointInterval", "5")
    monkeypatch.setitem(lake.TABLE_PROPERTIES, "delta.logRetentionDuration", "interval 1 seconds")
    monkeypatch.setitem(
        lake.TABLE_PROPERTIES, "delta.deletedFileRetentionDuration", "interval 1 seconds"
    )
    writer = claimed_writer(tmp_path)
    append_batches(writer, range(6))
    assert lake.compact(tmp_path, "transactions").files_removed == 6  # version 7
    append_batches(writer, range(6, 9))  # versions 8-10, a checkpoint at 9
    time.sleep(1.5)
    append_batches(writer, range(9, 16))  # versions 11-17, a checkpoint at 14 drops the expired
    log_dir = lake.dataset_dir(tmp_path, "transactions") / "_delta_log"
    commits = sorted(int(p.name.split(".")[0]) for p in log_dir.glob("*.json"))
    # Gone: every entry older than a second before the newest checkpoint older than a
    # second (9), from which a reader can still rebuild any version kept.
    assert commits == list(range(9, 18))
    # The compacted-away files' tombstones expired with them; vacuum lists the
    # directory, so it deletes those files all the same.
    removed = lake.vacuum(tmp_path, "transactions", retention_hours=0)
    assert len(removed) == 6
    assert duck("select count(*), count(distinct _offset) from {transactions}", tmp_path) == [
        (160, 160)
    ]
    assert lake.stored_offsets(lake.open_table(tmp_path, "transactions"), TOPIC, [0]) == {0: 160}


def test_compaction_gives_an_older_table_the_current_properties(tmp_path: Path) -> None:
    old = {**lake.TABLE_PROPERTIES, "delta.logRetentionDuration": "interval 12 hours"}
    path = lake.dataset_dir(tmp_path, "transactions")
    path.mkdir(parents=True)
    DeltaTable.create(
        path,
        schema=lake.table_schema("transactions"),
        partition_by=[lake.PARTITION_COLUMN],
        configuration=old,
    )
    lake.compact(tmp_path, "transactions")
    configured = lake.open_table(tmp_path, "transactions").metadata().configuration
    assert {k: configured.get(k) for k in lake.TABLE_PROPERTIES} == lake.TABLE_PROPERTIES
