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
