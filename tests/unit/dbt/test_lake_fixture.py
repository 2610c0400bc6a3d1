"""The synthetic lake writes exactly the lake contract the flow writes (and dbt reads)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.support.lake_fixture import (
    SCHEMAS,
    SyntheticLake,
    dedupe_transactions,
    merchant_minute_rows,
)

T0 = datetime(2026, 11, 25, 23, 59, 30, tzinfo=UTC)


def _txn(i: int, seconds: int, card: str = "card-1") -> dict[str, object]:
    return {
        "transaction_id": f"tx-{i}",
        "card_id": card,
        "merchant_id": "m-1",
        "mcc": "5411",
        "amount": Decimal("12.50") + i,
        "currency": "EUR",
        "country": "FR",
        "lat": 48.8,
        "lon": 2.3,
        "channel": "pos",
        "event_time": T0 + timedelta(seconds=seconds),
    }


def test_files_are_hive_partitioned_by_utc_event_date_with_the_contract_schema(
    tmp_path: Path,
) -> None:
    lake = SyntheticLake(tmp_path / "lake")
    rows = lake.offsets.assign([_txn(1, 0), _txn(2, 45), _txn(3, 50)])  # crosses midnight
    committed = lake.commit("transactions", rows)
    assert [c.path.split("/")[2] for c in committed] == [
        "event_date=2026-11-25",
        "event_date=2026-11-26",
    ]
    for c in committed:
        path = tmp_path / "lake" / c.path
        assert path.name.endswith(".parquet") and not path.name.startswith(".")
        table = pq.read_table(path)
        assert table.schema.equals(SCHEMAS["transactions"], check_metadata=False)
        assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
        assert table.schema.field("amount").type == pa.decimal128(18, 2)
    # no temporary file is left behind
    assert not [p for p in (tmp_path / "lake").rglob("*") if p.name.startswith(".")]


def test_manifest_lists_each_committed_file_with_its_offset_ranges(tmp_path: Path) -> None:
    lake = SyntheticLake(tmp_path / "lake")
    rows = lake.offsets.assign([_txn(i, i, card=f"card-{i % 2}") for i in range(6)])
    (committed,) = lake.commit("transactions", rows)
    lines = lake.manifest_path("transactions").read_text().splitlines(keepends=True)
    assert len(lines) == 1 and lines[0].endswith("\n")
    entry = json.loads(lines[0])
    assert set(entry) == {"path", "dataset", "rows", "committed_at", "ranges"}
    assert entry["path"] == committed.path and entry["dataset"] == "transactions"
    assert entry["rows"] == 6
    assert datetime.fromisoformat(entry["committed_at"]).tzinfo is not None
    by_partition: dict[int, list[int]] = {}
    for r in rows:
        by_partition.setdefault(int(r["_partition"]), []).append(int(r["_offset"]))
    assert entry["ranges"] == [
        {
            "topic": "payments.transactions",
            "partition": p,
            "first_offset": min(o),
            "last_offset": max(o),
        }
        for p, o in sorted(by_partition.items())
    ]


def test_torn_manifest_line_and_orphans_are_not_committed(tmp_path: Path) -> None:
    lake = SyntheticLake(tmp_path / "lake")
    rows = lake.offsets.assign([_txn(1, 0)])
    lake.commit("transactions", rows)
    lake.commit("transactions", rows, manifest=False)  # an orphan: renamed, never listed
    lake.append_torn_manifest_line("transactions")
    assert len(lake.manifest("transactions")) == 1
    files = list((tmp_path / "lake" / "payments" / "transactions").rglob("*.parquet"))
    assert len(files) == 2


def test_resends_get_later_offsets_in_the_same_partition_and_the_oracle_drops_them() -> None:
    lake = SyntheticLake(Path("/nonexistent"))
    first = lake.offsets.assign([_txn(1, 0)])[0]
    resend = lake.offsets.assign([_txn(1, 0)])[0]
    assert resend["_partition"] == first["_partition"]
    assert resend["_offset"] > first["_offset"]
    assert dedupe_transactions([resend, first]) == [first]


def test_merchant_minute_rows_aggregate_deduplicated_transactions() -> None:
    lake = SyntheticLake(Path("/nonexistent"))
    rows = lake.offsets.assign([_txn(1, 0), _txn(2, 10), _txn(1, 0)])  # one resend
    alerts = [{"transaction_id": "tx-2"}]
    (window,) = merchant_minute_rows(rows, alerts)
    assert window["txn_count"] == 2
    assert window["amount_sum"] == Decimal("13.50") + Decimal("14.50")
    assert window["amount_min"] == Decimal("13.50")
    assert window["distinct_cards"] == 1
    assert window["alert_count"] == 1
    assert window["window_end"] - window["window_start"] == timedelta(minutes=1)
