"""What the dashboard shows, read in one go: the lake (DuckDB over its Delta tables) and
Prometheus (its HTTP API). Never the warehouse's file: readers use the lake or the read
copy, so the dashboard can never hold up a build.

Each part is read independently; a part that cannot be read (no table yet, Prometheus
not up) is None and the page says so, instead of failing whole.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from riverbed import lake, prometheus
from riverbed.settings import Settings

log = logging.getLogger("riverbed.dashboard")

PROMETHEUS_TIMEOUT_S = 1.5
FEED_SIZE = 15
TOP_MERCHANTS = 10


@dataclass
class Snapshot:
    taken_at: float
    # The lake.
    transactions: int | None = None
    alerts_by_rule: dict[str, int] | None = None
    newest_alerts: list[dict[str, Any]] | None = None
    fraud_by_country: list[dict[str, Any]] | None = None
    fraud_by_mcc: list[dict[str, Any]] | None = None
    busiest_merchants: list[dict[str, Any]] | None = None
    # The lake, IoT.
    readings: int | None = None
    anomalies_by_rule: dict[str, int] | None = None
    newest_anomalies: list[dict[str, Any]] | None = None
    rooms: list[dict[str, Any]] | None = None  # each room's latest joined state
    # Prometheus.
    events_in_per_s: float | None = None  # acknowledged by the cluster
    events_out_per_s: float | None = None  # into the lake
    latency_p50_s: float | None = None  # from the producer's send to the lake commit
    latency_p99_s: float | None = None
    alert_latency_p99_s: float | None = None
    lag_by_partition: dict[str, float] | None = None
    brokers: list[dict[str, Any]] | None = None
    under_replicated: float | None = None
    flows_up: list[dict[str, Any]] | None = None
    firing: list[dict[str, Any]] | None = None
    warehouse_age_s: float | None = None
    problems: list[str] = field(default_factory=list)


def read_snapshot(settings: Settings) -> Snapshot:
    snap = Snapshot(taken_at=time.time())
    _read_lake(settings, snap)
    _read_iot(settings, snap)
    _read_prometheus(settings, snap)
    return snap


# --- the lake ----------------------------------------------------------------------------


def _read_lake(settings: Settings, snap: Snapshot) -> None:
    tables = _existing(settings, "payments", ("transactions", "alerts", "merchant_minute"))
    if "transactions" not in tables:
        snap.problems.append("no transactions in the lake yet")
        return
    con = lake.connect_duckdb()
    try:
        txns = tables["transactions"]
        snap.transactions = con.sql(f"select count(*) from {txns}").fetchone()[0]
        if "alerts" in tables:
            alerts = tables["alerts"]
            snap.alerts_by_rule = dict(
                con.sql(f"select rule, count(*) from {alerts} group by 1 order by 1").fetchall()
            )
            snap.newest_alerts = _rows(
                con,
                f"""
                select a.detected_at, a.rule, a.card_id, t.merchant_id, t.amount, t.country
                from {alerts} a left join {txns} t using (transaction_id)
                order by a.detected_at desc, a.alert_id limit {FEED_SIZE}
                """,
            )
            for key, target in (("country", "fraud_by_country"), ("mcc", "fraud_by_mcc")):
                setattr(snap, target, _fraud_by(con, txns, alerts, key))
        else:
            snap.alerts_by_rule, snap.newest_alerts = {}, []
        if "merchant_minute" in tables:
            windows = tables["merchant_minute"]
            snap.busiest_merchants = _rows(
                con,
                f"""
                with recent as (
                    select * from {windows}
                    where window_start >= (select max(window_start) from {windows})
                                          - interval 15 minutes
                )
                select merchant_id, sum(txn_count) as txns, sum(amount_sum) as amount,
                       sum(alert_count) as alerts, max(window_start) as last_window
                from recent group by 1 order by txns desc, merchant_id limit {TOP_MERCHANTS}
                """,
            )
    finally:
        con.close()


def _existing(settings: Settings, domain: str, names: tuple[str, ...]) -> dict[str, str]:
    """A DuckDB scan of each of the domain's tables that exists, by dataset name."""
    return {
        name: lake.scan_sql(settings.lake_dir, name, domain)
        for name in names
        if lake.table_exists(settings.lake_dir, name, domain)
    }


def _read_iot(settings: Settings, snap: Snapshot) -> None:
    """The IoT domain: readings, anomalies, and each room's latest joined state."""
    tables = _existing(settings, "iot", ("readings", "anomalies", "room_state"))
    if "readings" not in tables:
        return  # no IoT flow has run: the page leaves the section out
    con = lake.connect_duckdb()
    try:
        snap.readings = con.sql(f"select count(*) from {tables['readings']}").fetchone()[0]
        snap.anomalies_by_rule, snap.newest_anomalies = {}, []
        if "anomalies" in tables:
            anomalies = tables["anomalies"]
            snap.anomalies_by_rule = dict(
                con.sql(f"select rule, count(*) from {anomalies} group by 1 order by 1").fetchall()
            )
            snap.newest_anomalies = _rows(
                con,
                f"""
                select detected_at, rule, device_id, room_id, metric, value, details
                from {anomalies} order by detected_at desc, anomaly_id limit {FEED_SIZE}
                """,
            )
        if "room_state" in tables:
            snap.rooms = _rows(
                con,
                f"""
                select room_id, event_time, co2_ppm, light_lux, humidity_pct, occupied
                from {tables["room_state"]}
                qualify row_number() over (partition by room_id
                                           order by event_time desc, reading_id) = 1
                order by room_id
                """,
            )
    finally:
        con.close()


def _fraud_by(con: Any, txns: str, alerts: str, key: str) -> list[dict[str, Any]]:
    """Transactions, alerted transactions and their share per ``key``, the 10 highest."""
    return _rows(
        con,
        f"""
        with alerted as (select distinct transaction_id from {alerts})
        select t.{key} as {key}, count(*) as txns, count(a.transaction_id) as alerted,
               count(a.transaction_id) / count(*) as share
        from {txns} t left join alerted a using (transaction_id)
        group by 1 having count(a.transaction_id) > 0
        order by alerted desc, {key} limit 10
        """,
    )


def _rows(con: Any, sql: str) -> list[dict[str, Any]]:
    result = con.sql(sql)
    names = result.columns
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


# --- Prometheus --------------------------------------------------------------------------


def _read_prometheus(settings: Settings, snap: Snapshot) -> None:
    base = prometheus.url(settings)

    def query(promql: str) -> list[dict[str, Any]]:
        url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=PROMETHEUS_TIMEOUT_S) as answer:
            return json.loads(answer.read())["data"]["result"]

    def scalar(promql: str) -> float | None:
        found = query(promql)
        return float(found[0]["value"][1]) if found else None

    try:
        snap.events_in_per_s = scalar("sum(riverbed:producer_delivered:rate1m)")
        snap.events_out_per_s = scalar('sum(rate(riverbed_lake_rows{table="transactions"}[1m]))')
        snap.latency_p50_s = scalar("riverbed:flow_produce_to_lake_seconds:p50")
        snap.latency_p99_s = scalar("riverbed:flow_produce_to_lake_seconds:p99")
        snap.alert_latency_p99_s = scalar("riverbed:flow_produce_to_alert_seconds:p99")
        snap.lag_by_partition = {
            r["metric"]["partition"]: float(r["value"][1])
            for r in query("riverbed_consumer_lag_messages")
        }
        snap.brokers = [
            {"node": r["metric"].get("node", r["metric"]["instance"]), "up": r["value"][1] == "1"}
            for r in query('up{job="kafka"}')
        ]
        snap.under_replicated = scalar("sum(kafka_server_replicamanager_underreplicatedpartitions)")
        snap.flows_up = [
            {"instance": r["metric"]["instance"], "up": r["value"][1] == "1"}
            for r in query('up{job="flows"}')
        ]
        snap.firing = [r["metric"] for r in query('ALERTS{alertstate="firing"}')]
        published = scalar("riverbed_warehouse_published_timestamp_seconds")
        snap.warehouse_age_s = None if published is None else max(0.0, snap.taken_at - published)
    except (OSError, ValueError, KeyError) as exc:
        snap.problems.append(f"Prometheus at {base} did not answer ({exc})")
