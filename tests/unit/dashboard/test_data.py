"""The dashboard's figures from the lake, against polars reading the same Delta tables
(a reader independent of the DuckDB queries under test)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa

from dashboard.app import render
from dashboard.data import read_snapshot
from riverbed import lake
from riverbed.settings import load_settings
from tests.support.env import free_port
from tests.support.lake_fixture import TOPIC, txns

RULES = ("velocity", "amount_spike", "impossible_travel")


def alerts_for(transaction_ids: list[str]) -> pa.Table:
    n = len(transaction_ids)
    base = datetime(2024, 10, 4, tzinfo=UTC)
    return pa.table(
        {
            "alert_id": [f"al-{i}" for i in range(n)],
            "rule": [RULES[i % 3] for i in range(n)],
            "card_id": ["c"] * n,
            "transaction_id": transaction_ids,
            "event_time": [base + timedelta(seconds=i) for i in range(n)],
            "detected_at": [base + timedelta(seconds=i, milliseconds=5) for i in range(n)],
            "score": [1.0] * n,
            "details": ["{}"] * n,
            "_topic": [TOPIC] * n,
            "_partition": pa.array([0] * n, pa.int32()),
            "_offset": pa.array(range(n), pa.int64()),
        },
        schema=lake.SCHEMAS["alerts"],
    )


def test_the_snapshot_counts_what_the_lake_holds(tmp_path: Path) -> None:
    # No Prometheus listens on this port: those figures are missing, and said to be.
    settings = load_settings(home=tmp_path, prometheus_port=free_port())
    app = lake.app_id(TOPIC, 0)
    transactions = txns(range(300))
    writer = lake.TableWriter(settings.lake_dir, "transactions")
    writer.claim([app])
    writer.append(transactions, {app: 300})
    alerted = [f"tx-0-{o}" for o in range(0, 300, 7)]
    alerts = lake.TableWriter(settings.lake_dir, "alerts")
    alerts.claim([app])
    alerts.append(alerts_for(alerted), {app: 300})

    snap = read_snapshot(settings)

    stored = pl.read_delta(str(lake.dataset_dir(settings.lake_dir, "alerts")))
    expected_rules = dict(stored.group_by("rule").len().iter_rows())
    assert (
        snap.transactions
        == pl.read_delta(str(lake.dataset_dir(settings.lake_dir, "transactions"))).height
        == 300
    )
    assert snap.alerts_by_rule == expected_rules
    assert sum(expected_rules.values()) == len(alerted)
    newest = stored.sort("detected_at", descending=True).head(len(snap.newest_alerts or []))
    assert [a["rule"] for a in snap.newest_alerts or []] == newest["rule"].to_list()
    (country,) = snap.fraud_by_country or []
    assert (country["txns"], country["alerted"]) == (300, len(alerted))
    assert snap.events_in_per_s is None
    assert any("Prometheus" in p for p in snap.problems)
    assert render(snap)  # the page draws without Prometheus


def test_the_iot_section_shows_readings_anomalies_and_each_rooms_latest_state(
    tmp_path: Path,
) -> None:
    settings = load_settings(home=tmp_path, prometheus_port=free_port())
    topic = "iot.readings"
    app = lake.app_id(topic, 0)
    base = datetime(2026, 11, 30, 9, tzinfo=UTC)
    readings = lake.TableWriter(settings.lake_dir, "readings", "iot")
    readings.claim([app])
    rows = [
        {
            "reading_id": f"r{i}",
            "device_id": f"{room}-air",
            "room_id": room,
            "event_time": base + timedelta(seconds=10 * i),
            "co2_ppm": 500.0 + i,
            "late": False,
            "_topic": topic,
            "_partition": 0,
            "_offset": i,
        }
        for i, room in enumerate(["a", "b"] * 20)
    ]
    table = pa.Table.from_pylist(rows, schema=lake.SCHEMAS["readings"])
    readings.append(table, {app: 40})
    states = lake.TableWriter(settings.lake_dir, "room_state", "iot")
    state_rows = [
        {
            "room_id": r["room_id"],
            "reading_id": r["reading_id"],
            "device_id": r["device_id"],
            "event_time": r["event_time"],
            "co2_ppm": r["co2_ppm"],
            "light_lux": 400.0 if r["_offset"] % 4 == 0 else 10.0,
            "occupied": r["_offset"] % 4 == 0,
            "_topic": topic,
            "_partition": 0,
            "_offset": r["_offset"],
        }
        for r in rows
    ]
    states.upsert(
        pa.Table.from_pylist(state_rows, schema=lake.SCHEMAS["room_state"]), {}, keep_if=None
    )

    snap = read_snapshot(settings)

    assert snap.readings == 40
    assert snap.anomalies_by_rule == {} and snap.newest_anomalies == []
    # The oracle: each room's newest state, with polars over the Delta table.
    stored = pl.read_delta(str(lake.dataset_dir(settings.lake_dir, "room_state", "iot")))
    newest = stored.sort("event_time").group_by("room_id").last().sort("room_id")
    assert [(r["room_id"], r["co2_ppm"], r["occupied"]) for r in snap.rooms or []] == list(
        newest.select("room_id", "co2_ppm", "occupied").iter_rows()
    )
    assert render(snap)
