"""The synthetic lake writes exactly the lake contract the flow writes (and dbt reads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from riverbed.lake import FencedWriter, table_schema
from tests.support.lake_fixture import (
    WINDOWS_APP_ID,
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


def test_a_commit_is_a_delta_table_partitioned_by_utc_event_date(tmp_path: Path) -> None:
    lake = SyntheticLake(tmp_path / "lake")
    rows = lake.offsets.assign([_txn(1, 0), _txn(2, 45), _txn(3, 50)])  # crosses midnight
    lake.commit("transactions", rows)
    table = DeltaTable(tmp_path / "lake" / "payments" / "transactions")
    assert table.metadata().partition_columns == ["event_date"]
    snapshot = lake.read("transactions")
    assert snapshot.schema.equals(table_schema("transactions"), check_metadata=False)
    assert snapshot.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert snapshot.schema.field("amount").type == pa.decimal128(18, 2)
    dates = sorted(d.isoformat() for d in snapshot.column("event_date").to_pylist())
    assert dates == ["2026-11-25", "2026-11-26", "2026-11-26"]


def test_each_commit_records_the_next_offset_of_every_partition_it_covers(
    tmp_path: Path,
) -> None:
    lake = SyntheticLake(tmp_path / "lake")
    rows = lake.offsets.assign([_txn(i, i, card=f"card-{i % 2}") for i in range(6)])
    lake.commit("transactions", rows)
    table = DeltaTable(tmp_path / "lake" / "payments" / "transactions")
    expected: dict[int, int] = {}
    for r in rows:
        partition = int(r["_partition"])
        expected[partition] = max(expected.get(partition, 0), r["_offset"] + 1)
    for partition, next_offset in expected.items():
        assert table.transaction_version(f"payments.transactions/{partition}") == next_offset


def test_records_below_what_a_partition_committed_are_refused(tmp_path: Path) -> None:
    """As for a stale flow: the same offsets cannot be committed twice."""
    lake = SyntheticLake(tmp_path / "lake")
    rows = lake.offsets.assign([_txn(1, 0)])
    lake.commit("transactions", rows)
    with pytest.raises(FencedWriter):
        lake.commit("transactions", rows)
    assert lake.read("transactions").num_rows == 1


def test_windows_are_upserted_one_row_per_merchant_and_window(tmp_path: Path) -> None:
    lake = SyntheticLake(tmp_path / "lake")
    first = lake.offsets.assign([_txn(1, 0)])
    lake.upsert_windows(merchant_minute_rows(first))
    more = first + lake.offsets.assign([_txn(2, 10)])
    lake.upsert_windows(merchant_minute_rows(more))
    windows = lake.read("merchant_minute").to_pylist()
    assert len(windows) == 1 and windows[0]["txn_count"] == 2
    table = DeltaTable(tmp_path / "lake" / "payments" / "merchant_minute")
    assert table.transaction_version(WINDOWS_APP_ID) == 2


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
