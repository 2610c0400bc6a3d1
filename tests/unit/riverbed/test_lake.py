"""The lake writer: layout, atomic commits, the manifest, and reading it back with DuckDB."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from riverbed import lake

TOPIC = "payments.transactions"
DAY1 = datetime(2026, 1, 30, 23, 59, 30, tzinfo=UTC)
DAY2 = datetime(2026, 1, 31, 0, 0, 10, tzinfo=UTC)


def us(dt: datetime) -> int:
    return int(dt.timestamp()) * 1_000_000


def txns(offsets: list[int], times: list[datetime], partition: int = 3) -> pa.Table:
    n = len(offsets)
    return pa.Table.from_arrays(
        [
            pa.array([f"tx-{o}" for o in offsets]),
            pa.array(["card-1"] * n),
            pa.array(["merch-1"] * n),
            pa.array(["5411"] * n),
            lake.money_from_cents([1234 + o for o in offsets]),
            pa.array(["EUR"] * n),
            pa.array(["FR"] * n),
            pa.array([48.85] * n, pa.float64()),
            pa.array([2.35] * n, pa.float64()),
            pa.array(["pos"] * n),
            lake.utc_micros([us(t) for t in times]),
            pa.array([False] * n),
            pa.array([TOPIC] * n),
            pa.array([partition] * n, pa.int32()),
            pa.array(offsets, pa.int64()),
        ],
        schema=lake.TRANSACTIONS_SCHEMA,
    )


def test_schemas_are_the_contract() -> None:
    as_text = {name: str(schema).splitlines() for name, schema in lake.SCHEMAS.items()}
    assert as_text["transactions"] == [
        "transaction_id: string",
        "card_id: string",
        "merchant_id: string",
        "mcc: string",
        "amount: decimal128(18, 2)",
        "currency: string",
        "country: string",
        "lat: double",
        "lon: double",
        "channel: string",
        "event_time: timestamp[us, tz=UTC]",
        "late: bool",
        "_topic: string",
        "_partition: int32",
        "_offset: int64",
    ]
    assert lake.ALERTS_SCHEMA.names == [
        "alert_id", "rule", "card_id", "transaction_id", "event_time", "detected_at",
        "score", "details", "_topic", "_partition", "_offset",
    ]  # fmt: skip
    assert lake.MERCHANT_MINUTE_SCHEMA.names == [
        "merchant_id", "window_start", "window_end", "txn_count", "amount_sum", "amount_min",
        "amount_max", "amount_mean", "distinct_cards", "alert_count", "revision",
    ]  # fmt: skip


def test_money_from_cents_is_exact() -> None:
    values = [0, 1, -5, 12345, 99_999_999_999, -(10**15)]
    money = lake.money_from_cents(values)
    money.validate(full=True)
    assert money.type == lake.MONEY
    assert money.to_pylist() == [Decimal(v) / 100 for v in values]


def test_rows_of_a_partition_go_to_one_range_named_file_per_day(tmp_path: Path) -> None:
    writer = lake.LakeWriter(tmp_path)
    files = writer.write_partition_rows(
        "transactions", txns([100, 101, 102, 250], [DAY1, DAY2, DAY1, DAY2]), topic=TOPIC,
        partition=3,
    )  # fmt: skip
    assert [f.path for f in files] == [
        "payments/transactions/event_date=2026-01-30/p03-000000000100-000000000102.parquet",
        "payments/transactions/event_date=2026-01-31/p03-000000000101-000000000250.parquet",
    ]
    assert [f.rows for f in files] == [2, 2]
    assert files[1].ranges == (lake.OffsetRange(TOPIC, 3, 101, 250),)
    assert not list(tmp_path.rglob("*.tmp")), "no temporary file is left behind"
    assert lake.parse_range_file_name("p03-000000000101-000000000250.parquet") == (3, 101, 250)
    assert lake.parse_range_file_name(".p03-000000000101-000000000250.parquet.tmp") is None


def test_manifest_lines_follow_the_contract(tmp_path: Path) -> None:
    writer = lake.LakeWriter(tmp_path)
    writer.write_partition_rows(
        "transactions", txns([7, 8], [DAY1, DAY1]), topic=TOPIC, partition=3
    )
    path = tmp_path / "_manifest" / "payments" / "transactions.jsonl"
    (line,) = path.read_text().splitlines()
    entry = json.loads(line)
    assert entry["path"] == (
        "payments/transactions/event_date=2026-01-30/p03-000000000007-000000000008.parquet"
    )
    assert entry["dataset"] == "transactions"
    assert entry["rows"] == 2
    assert datetime.fromisoformat(entry["committed_at"]).tzinfo is not None
    assert entry["ranges"] == [
        {"topic": TOPIC, "partition": 3, "first_offset": 7, "last_offset": 8}
    ]


def test_duckdb_reads_a_dataset_with_one_glob_even_before_the_first_file(tmp_path: Path) -> None:
    writer = lake.LakeWriter(tmp_path)
    writer.ensure_dataset("transactions")
    scan = lake.scan_sql(tmp_path, "transactions")
    assert duckdb.sql(f"select count(*) from {scan}").fetchall() == [(0,)]
    writer.write_partition_rows(
        "transactions", txns([1, 2, 3], [DAY1, DAY2, DAY2]), topic=TOPIC, partition=0
    )
    # A crashed writer's leftover: hidden, so the glob never sees it.
    leftover = tmp_path / "payments/transactions/event_date=2026-01-31/.p00-x.parquet.tmp"
    leftover.write_bytes(b"PAR1 half a file")
    rows = duckdb.sql(
        f"select event_date, count(*), sum(amount) from {scan} group by 1 order by 1"
    ).fetchall()
    assert [(str(d), n, s) for d, n, s in rows] == [
        ("2026-01-30", 1, Decimal("12.35")),
        ("2026-01-31", 2, Decimal("24.73")),
    ]
    assert lake.dataset_glob(tmp_path, "transactions") == (
        f"{tmp_path.as_posix()}/payments/transactions/*/*.parquet"
    )


def test_high_water_is_kept_per_day(tmp_path: Path) -> None:
    writer = lake.LakeWriter(tmp_path)
    writer.write_partition_rows(
        "transactions", txns([10, 11], [DAY1, DAY2]), topic=TOPIC, partition=3
    )
    writer.write_partition_rows(
        "transactions", txns([12, 20], [DAY2, DAY2]), topic=TOPIC, partition=3
    )
    writer.write_partition_rows(
        "transactions", txns([5], [DAY1], partition=4), topic=TOPIC, partition=4
    )
    assert lake.offset_high_water(tmp_path, "transactions", 3) == {
        "2026-01-30": 10,
        "2026-01-31": 20,
    }
    assert lake.offset_high_water(tmp_path, "transactions", 4) == {"2026-01-30": 5}
    assert lake.offset_high_water(tmp_path, "transactions", 5) == {}


def test_roll_forward_lists_a_file_renamed_before_its_manifest_line(tmp_path: Path) -> None:
    writer = lake.LakeWriter(tmp_path)
    writer.write_partition_rows(
        "transactions", txns([1, 2], [DAY1, DAY1]), topic=TOPIC, partition=3
    )
    # A crash right after a rename: the file is there, its line is not; and the
    # line being appended was cut short.
    orphan_dir = tmp_path / "payments/transactions/event_date=2026-01-31"
    orphan_dir.mkdir(parents=True)
    orphan = orphan_dir / lake.range_file_name(3, 3, 9)
    pq.write_table(txns([3, 9], [DAY2, DAY2]), orphan)
    other = orphan_dir / lake.range_file_name(4, 0, 0)
    pq.write_table(txns([0], [DAY2], partition=4), other)
    manifest = lake.manifest_path(tmp_path, "transactions")
    with manifest.open("a") as f:
        f.write('{"path": "payments/transactions/event_da')

    added = lake.roll_forward_manifest(tmp_path, "transactions", "p03-")

    assert [f.path for f in added] == [orphan.relative_to(tmp_path).as_posix()]
    assert added[0].ranges == (lake.OffsetRange(TOPIC, 3, 3, 9),)
    entries = lake.read_manifest(tmp_path, "transactions")
    assert [e["path"].rsplit("/", 1)[1] for e in entries] == [
        "p03-000000000001-000000000002.parquet",
        "p03-000000000003-000000000009.parquet",
    ], "the torn line is skipped, partition 4's orphan is left to its own writer"
    assert lake.roll_forward_manifest(tmp_path, "transactions", "p03-") == []


def test_read_manifest_ignores_a_torn_last_line(tmp_path: Path) -> None:
    writer = lake.LakeWriter(tmp_path)
    writer.write_partition_rows("transactions", txns([1], [DAY1]), topic=TOPIC, partition=1)
    with lake.manifest_path(tmp_path, "transactions").open("a") as f:
        f.write('{"path": "pay')
    assert len(lake.read_manifest(tmp_path, "transactions")) == 1


def test_remove_temp_files_only_touches_its_own_prefix(tmp_path: Path) -> None:
    directory = tmp_path / "payments/transactions/event_date=2026-01-30"
    directory.mkdir(parents=True)
    mine = directory / ".p03-000000000001-000000000002.parquet.tmp"
    theirs = directory / ".p04-000000000001-000000000002.parquet.tmp"
    mine.write_bytes(b"x")
    theirs.write_bytes(b"x")
    assert lake.remove_temp_files(tmp_path, "transactions", "p03-") == 1
    assert not mine.exists() and theirs.exists()


def test_rows_without_offsets_get_named_by_the_caller(tmp_path: Path) -> None:
    writer = lake.LakeWriter(tmp_path)
    table = pa.Table.from_pylist(
        [
            {
                "merchant_id": "m",
                "window_start": DAY1.replace(second=0),
                "window_end": DAY1.replace(second=0) + timedelta(minutes=1),
                "txn_count": 1,
                "amount_sum": Decimal("1.00"),
                "amount_min": Decimal("1.00"),
                "amount_max": Decimal("1.00"),
                "amount_mean": 1.0,
                "distinct_cards": 1,
                "alert_count": 0,
                "revision": 0,
            }
        ],
        schema=lake.MERCHANT_MINUTE_SCHEMA,
    )
    (committed,) = writer.write_rows("merchant_minute", table, name_for=lambda t: "mm-x.parquet")
    assert committed.path == "payments/merchant_minute/event_date=2026-01-30/mm-x.parquet"
    assert committed.ranges == ()
    assert lake.read_manifest(tmp_path, "merchant_minute")[0]["ranges"] == []


@pytest.mark.parametrize("dataset", sorted(lake.SCHEMAS))
def test_every_dataset_is_readable_when_empty(tmp_path: Path, dataset: str) -> None:
    lake.LakeWriter(tmp_path).ensure_dataset(dataset)
    names = [
        r[0] for r in duckdb.sql(f"describe select * from {lake.scan_sql(tmp_path, dataset)}")
        .fetchall()
    ]  # fmt: skip
    assert names == [*lake.SCHEMAS[dataset].names, "event_date"]
    assert lake.committed_files(tmp_path, dataset) == []


def test_manifest_paths_since_reads_only_the_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lake, "_TAIL_CHUNK", 64)  # lines span chunk boundaries
    old = datetime(2026, 1, 1, tzinfo=UTC)
    new = datetime(2026, 2, 1, tzinfo=UTC)
    files = [
        lake.CommittedFile(f"payments/transactions/event_date=x/f{i}.parquet", "transactions",
                           1, old if i < 50 else new)
        for i in range(60)
    ]  # fmt: skip
    lake.append_manifest(tmp_path, files)
    paths = lake.manifest_paths_since(tmp_path, "transactions", new.timestamp())
    assert {f"payments/transactions/event_date=x/f{i}.parquet" for i in range(50, 60)} <= paths
    assert len(paths) < 60, "stops once it reaches older lines"
    everything = lake.manifest_paths_since(tmp_path, "transactions", 0)
    assert len(everything) == 60
    assert lake.manifest_paths_since(tmp_path, "alerts", 0) == set()
