"""The dbt warehouse over a synthetic lake: real dbt, real DuckDB, no Kafka.

A known input (a few thousand transactions with producer resends, alerts,
merchant_minute windows) is written to the Delta lake the way the flow writes it
(riverbed.lake.TableWriter: offsets recorded per commit, windows upserted); ``dbt
build`` must produce marts equal to an oracle computed here in Python. A second
micro-batch (a new day, late events and stragglers into an old day, resends of loaded
transactions) must add exactly the new rows, reading only the records above the
loaded offsets and recomputing only the changed dates. Compaction must change
nothing. Broken inputs must fail the build.

Late events (``late`` true: past the allowed lateness) are kept in the transactions
and join no window; stragglers (within the allowed lateness, but after their window
was written) make the flow upsert their window.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from deltalake import write_deltalake

from riverbed import lake as lake_tables
from tests.support.lake_fixture import (
    DbtRun,
    Row,
    SyntheticLake,
    dedupe_transactions,
    merchant_minute_rows,
    run_dbt,
    to_money,
    window_start,
)

RULES = ("velocity", "amount_spike", "impossible_travel", "card_testing", "profile_amount")
COUNTRIES = ("FR", "DE", "GB", "US", "ES")
DAY0 = datetime(2026, 11, 20, tzinfo=UTC)


# --------------------------------------------------------------------------------------
# input
# --------------------------------------------------------------------------------------


def make_transactions(
    rng: random.Random, first: int, n: int, day: int, days: int = 1, late: bool = False
) -> list[Row]:
    """``n`` transactions with event times in ``days`` days from DAY0 + ``day``."""
    rows = []
    for i in range(first, first + n):
        rows.append(
            {
                "transaction_id": f"tx-{i:06d}",
                "card_id": f"card-{rng.randrange(60):03d}",
                "merchant_id": f"m-{rng.randrange(25):02d}",
                "mcc": f"{rng.randrange(10_000):04d}",
                "amount": Decimal(rng.randrange(1, 200_000)) / 100,
                "currency": rng.choice(("EUR", "USD")),
                "country": rng.choice(COUNTRIES),
                "lat": rng.uniform(-90, 90),
                "lon": rng.uniform(-180, 180),
                "channel": rng.choice(("pos", "online", "atm")),
                "event_time": DAY0
                + timedelta(days=day, microseconds=rng.randrange(days * 86_400_000_000)),
                "late": late,
            }
        )
    return sorted(rows, key=lambda r: r["event_time"])


def make_alerts(rng: random.Random, transactions: Sequence[Row], share: float) -> list[Row]:
    """Alerts on about ``share`` of the transactions, some with two rules."""
    alerts = []
    for t in transactions:
        if rng.random() >= share:
            continue
        for rule in rng.sample(RULES, k=2 if rng.random() < 0.2 else 1):
            alerts.append(
                {
                    "alert_id": f"al-{rule}-{t['transaction_id']}",
                    "rule": rule,
                    "card_id": t["card_id"],
                    "transaction_id": t["transaction_id"],
                    "event_time": t["event_time"],
                    "detected_at": t["event_time"] + timedelta(seconds=1),
                    "score": round(rng.random(), 3),
                    "details": json.dumps({"rule": rule}),
                    "_topic": t["_topic"],
                    "_partition": t["_partition"],
                    "_offset": t["_offset"],
                }
            )
    return alerts


@dataclass
class Lake:
    """A synthetic lake and everything written to it (the oracle's input)."""

    lake: SyntheticLake
    rng: random.Random
    records: list[Row] = field(default_factory=list)  # every transaction record sent
    alerts: list[Row] = field(default_factory=list)  # every alert written

    def send(self, transactions: Sequence[Row]) -> list[Row]:
        """Transactions as the flow lands them: with Kafka offsets, in commits of 400."""
        return self.land(self.lake.offsets.assign(transactions))

    def land(self, records: list[Row]) -> list[Row]:
        self.records += records
        self.lake.commit("transactions", records, rows_per_commit=400)
        return records

    def raise_alerts(self, alerts: Sequence[Row]) -> None:
        self.alerts += alerts
        self.lake.commit("alerts", alerts, rows_per_commit=100)

    def aggregate_windows(self, touched: Sequence[Row]) -> None:
        """Upsert the merchant_minute rows of every window an on-time transaction of
        ``touched`` falls in (a late one joins no window)."""
        keys = {(t["merchant_id"], window_start(t["event_time"])) for t in touched if not t["late"]}
        alerts = list({a["alert_id"]: a for a in self.alerts}.values())
        rows = [
            r
            for r in merchant_minute_rows(self.records, alerts)
            if (r["merchant_id"], r["window_start"]) in keys
        ]
        self.lake.upsert_windows(rows)


def first_batch(lake: Lake) -> None:
    """Three days of transactions, producer resends, alerts and windows."""
    rng = lake.rng
    originals = make_transactions(rng, 0, 2_400, day=0, days=3)
    resent = [dict(t) for t in rng.sample(originals, 48)]  # producer resends, later offsets
    records = lake.land(lake.lake.offsets.assign(originals + resent))
    lake.raise_alerts(make_alerts(rng, records[: len(originals)], share=0.04))
    lake.aggregate_windows(records)


def second_batch(lake: Lake) -> None:
    """A new day, late events and stragglers into the first day, resends of loaded
    transactions."""
    rng = lake.rng
    fresh = make_transactions(rng, 10_000, 600, day=3)
    late = make_transactions(rng, 20_000, 30, day=0, late=True)
    stragglers = make_transactions(rng, 30_000, 20, day=0)
    resent = [
        {k: v for k, v in t.items() if not k.startswith("_")}
        for t in rng.sample(lake.records[:2_400], 10)
    ]
    records = lake.send(fresh + late + stragglers + resent)
    new = records[:650]  # the flow dropped the resends
    lake.raise_alerts(make_alerts(rng, new, share=0.05))
    lake.aggregate_windows(new)


def offset_watermarks(records: Sequence[Row]) -> dict[int, int]:
    """Per partition: the highest offset of a transaction's first record (the oracle of
    what fct_transactions holds)."""
    out: dict[int, int] = {}
    for t in dedupe_transactions(records):
        out[t["_partition"]] = max(out.get(t["_partition"], -1), t["_offset"])
    return out


# --------------------------------------------------------------------------------------
# the oracle
# --------------------------------------------------------------------------------------


def hour_of(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class Oracle:
    """The marts, computed in Python from what was written to the lake."""

    transactions: dict[str, Row]
    alerts: dict[str, Row]

    @classmethod
    def of(cls, lake: Lake) -> Oracle:
        txns = {t["transaction_id"]: t for t in dedupe_transactions(lake.records)}
        return cls(txns, {a["alert_id"]: a for a in lake.alerts})

    def merchant_hourly(self) -> dict[tuple[str, datetime], tuple[Any, ...]]:
        """The on-time transactions (late ones join no window) per merchant and hour."""
        on_time = {k: t for k, t in self.transactions.items() if not t["late"]}
        groups: dict[tuple[str, datetime], list[Row]] = defaultdict(list)
        for t in on_time.values():
            groups[(t["merchant_id"], hour_of(t["event_time"]))].append(t)
        alerts = Counter(
            (on_time[a["transaction_id"]]["merchant_id"], hour_of(a["event_time"]))
            for a in self.alerts.values()
            if a["transaction_id"] in on_time
        )
        out = {}
        for key, members in groups.items():
            amounts = [to_money(m["amount"]) for m in members]
            minutes = {window_start(m["event_time"]) for m in members}
            out[key] = (
                len(members),
                sum(amounts, Decimal(0)),
                min(amounts),
                max(amounts),
                len(minutes),
                alerts[key],
            )
        return out

    def cards(self) -> dict[str, tuple[Any, ...]]:
        return self._dimension("card_id", Counter(a["card_id"] for a in self.alerts.values()))

    def merchants(self) -> dict[str, tuple[Any, ...]]:
        alerts = Counter(
            self.transactions[a["transaction_id"]]["merchant_id"] for a in self.alerts.values()
        )
        return self._dimension("merchant_id", alerts)

    def _dimension(self, key: str, alerts: Mapping[str, int]) -> dict[str, tuple[Any, ...]]:
        groups: dict[str, list[Row]] = defaultdict(list)
        for t in self.transactions.values():
            groups[t[key]].append(t)
        out = {}
        for k, members in groups.items():
            countries = Counter(m["country"] for m in members)
            home = min(countries, key=lambda c: (-countries[c], c))
            out[k] = (
                home,
                min(m["event_time"] for m in members),
                max(m["event_time"] for m in members),
                len(members),
                sum((to_money(m["amount"]) for m in members), Decimal(0)),
                alerts.get(k, 0),
            )
        return out

    def fraud_daily(self) -> dict[tuple[date, str], tuple[Any, ...]]:
        daily = Counter(t["event_time"].astimezone(UTC).date() for t in self.transactions.values())
        out = {}
        for day, txn_count in daily.items():
            for rule in RULES:
                fired = [
                    a
                    for a in self.alerts.values()
                    if a["rule"] == rule and a["event_time"].astimezone(UTC).date() == day
                ]
                flagged = {a["transaction_id"] for a in fired}
                at_risk = sum(
                    (to_money(self.transactions[t]["amount"]) for t in flagged), Decimal(0)
                )
                out[(day, rule)] = (len(fired), len(flagged), at_risk, txn_count)
        return out


# --------------------------------------------------------------------------------------
# the warehouse
# --------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """What the warehouse holds after a build."""

    transactions: dict[str, tuple[Any, ...]]  # transaction_id -> (_offset, _loaded_at)
    alert_ids: list[str]
    merchant_hourly: dict[tuple[str, datetime], tuple[Any, ...]]
    cards: dict[str, tuple[Any, ...]]
    merchants: dict[str, tuple[Any, ...]]
    fraud_daily: dict[tuple[date, str], tuple[Any, ...]]
    hourly_means: dict[tuple[str, datetime], float]
    flagged_shares: dict[tuple[date, str], float | None]

    @classmethod
    def of(cls, home: Path) -> Snapshot:
        con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
        try:

            def rows(sql: str) -> list[tuple[Any, ...]]:
                return con.execute(sql).fetchall()

            return cls(
                transactions={
                    r[0]: r[1:]
                    for r in rows(
                        "select transaction_id, _offset, _loaded_at from fct_transactions"
                    )
                },
                alert_ids=[r[0] for r in rows("select alert_id from fct_fraud_alerts")],
                merchant_hourly={
                    (r[0], r[1]): r[2:]
                    for r in rows(
                        "select merchant_id, hour_start, txn_count, amount_sum, amount_min, "
                        "amount_max, active_minutes, alert_count from agg_merchant_hourly"
                    )
                },
                cards={
                    r[0]: r[1:]
                    for r in rows(
                        "select card_id, home_country_code, first_seen_at, last_seen_at, "
                        "txn_count, amount_sum, alert_count from dim_cards"
                    )
                },
                merchants={
                    r[0]: r[1:]
                    for r in rows(
                        "select merchant_id, home_country_code, first_seen_at, last_seen_at, "
                        "txn_count, amount_sum, alert_count from dim_merchants"
                    )
                },
                fraud_daily={
                    (r[0], r[1]): r[2:]
                    for r in rows(
                        "select event_date, rule, alert_count, flagged_txn_count, "
                        "amount_at_risk, txn_count from fct_fraud_daily"
                    )
                },
                hourly_means={
                    (r[0], r[1]): r[2]
                    for r in rows(
                        "select merchant_id, hour_start, amount_mean from agg_merchant_hourly"
                    )
                },
                flagged_shares={
                    (r[0], r[1]): r[2]
                    for r in rows("select event_date, rule, flagged_share from fct_fraud_daily")
                },
            )
        finally:
            con.close()


def assert_marts_match(snapshot: Snapshot, oracle: Oracle) -> None:
    assert sorted(snapshot.transactions) == sorted(oracle.transactions)
    for tid, (offset, _loaded_at) in snapshot.transactions.items():
        assert offset == oracle.transactions[tid]["_offset"], tid  # the earliest record
    assert sorted(snapshot.alert_ids) == sorted(oracle.alerts)
    assert snapshot.merchant_hourly == oracle.merchant_hourly()
    for key, (count, total, *_rest) in oracle.merchant_hourly().items():
        assert snapshot.hourly_means[key] == pytest.approx(float(total) / count)
    assert snapshot.cards == oracle.cards()
    assert snapshot.merchants == oracle.merchants()
    assert snapshot.fraud_daily == oracle.fraud_daily()
    for (day, rule), (_alerts, flagged, _risk, txns) in oracle.fraud_daily().items():
        assert snapshot.flagged_shares[(day, rule)] == pytest.approx(flagged / txns)


@dataclass
class Scenario:
    lake: Lake
    first: Snapshot
    first_oracle: Oracle
    second: Snapshot
    second_oracle: Oracle
    second_run: DbtRun
    second_sql: dict[str, str]  # compiled SQL of the incremental build, per mart
    first_watermarks: dict[int, int]
    compacted: Snapshot
    compacted_run: DbtRun
    facts_refreshed: Snapshot  # after a full refresh of fct_transactions alone, then a build


def builds(home: Path) -> Generator[None, DbtRun, Scenario]:
    """Two micro-batches, a ``dbt build`` after each, then compaction and a full refresh of
    the facts, each followed by a build. At each ``yield`` the lake is ready for the next
    build, whose run is sent back: the builds are shared with the IoT scenario
    (``warehouse_scenarios`` in tests/integration/conftest.py; the dbt runs are the slow
    part)."""
    lake = Lake(SyntheticLake(home / "lake"), random.Random(20261125))

    first_batch(lake)
    yield
    first = Snapshot.of(home)
    first_oracle = Oracle.of(lake)
    first_watermarks = offset_watermarks(lake.records)

    second_batch(lake)
    second_run = yield
    second = Snapshot.of(home)
    second_sql = {
        model: second_run.compiled_sql(f"marts/payments/{model}.sql")
        for model in ("fct_transactions", "agg_merchant_hourly")
    }

    # compaction rewrites every file; a build after it must change nothing
    for dataset in ("transactions", "alerts", "merchant_minute"):
        assert lake_tables.compact(home / "lake", dataset).files_removed > 0
    compacted_run = yield
    compacted = Snapshot.of(home)

    # an operator rebuilds the facts alone: every row gets a new _loaded_at, and the
    # activity tables behind the dimensions (added to from new loads) must not add
    # them again
    refresh = run_dbt(home, "run", "--full-refresh", "--select", "fct_transactions")
    assert refresh.ok, refresh.output[-6000:]
    yield
    return Scenario(
        lake=lake,
        first=first,
        first_oracle=first_oracle,
        second=second,
        second_oracle=Oracle.of(lake),
        second_run=second_run,
        second_sql=second_sql,
        first_watermarks=first_watermarks,
        compacted=compacted,
        compacted_run=compacted_run,
        facts_refreshed=Snapshot.of(home),
    )


@pytest.fixture(scope="module")
def scenario(warehouse_scenarios: dict[str, Any]) -> Scenario:
    return warehouse_scenarios["payments"]


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------


def test_full_build_matches_the_oracle(scenario: Scenario) -> None:
    assert len(scenario.first.transactions) == 2_400  # resends and the replayed file dropped
    assert_marts_match(scenario.first, scenario.first_oracle)


def test_incremental_build_adds_exactly_the_new_rows(scenario: Scenario) -> None:
    before, after = scenario.first.transactions, scenario.second.transactions
    assert len(after) == len(before) + 650  # 600 new, 30 late, 20 stragglers; no resend
    assert set(before) <= set(after)
    # rows loaded by the first build are untouched: same record, same load
    assert {tid: after[tid] for tid in before} == before
    assert_marts_match(scenario.second, scenario.second_oracle)


def test_incremental_build_reads_only_records_above_the_loaded_offsets(
    scenario: Scenario,
) -> None:
    floor = min(scenario.first_watermarks.values())
    sql = scenario.second_sql["fct_transactions"]
    # the literal floor delta_scan skips files by: the lowest partition watermark
    assert re.search(rf"where _offset > {floor}\b", sql), sql
    # the hourly aggregate recomputes the dates whose merchant_minute rows changed:
    # the new day, and the first day (stragglers updated windows there)
    sql = scenario.second_sql["agg_merchant_hourly"]
    assert set(re.findall(r"'(\d{4}-\d{2}-\d{2})'", sql)) == {"2026-11-20", "2026-11-23"}


def test_compaction_changes_nothing_in_the_warehouse(scenario: Scenario) -> None:
    # float means may differ in the last bits (a recomputed date sums in another order)
    compacted = dataclasses.replace(scenario.compacted, hourly_means={})
    assert compacted == dataclasses.replace(scenario.second, hourly_means={})
    assert scenario.compacted.hourly_means == pytest.approx(scenario.second.hourly_means)
    assert all(s in ("pass", "success") for s in scenario.compacted_run.statuses().values())


def test_a_full_refresh_of_the_facts_alone_counts_nothing_twice(scenario: Scenario) -> None:
    assert scenario.facts_refreshed.cards == scenario.second_oracle.cards()
    assert scenario.facts_refreshed.merchants == scenario.second_oracle.merchants()


def test_stragglers_update_their_windows(scenario: Scenario) -> None:
    oracle = scenario.second_oracle.merchant_hourly()
    straggler_hours = {
        (t["merchant_id"], hour_of(t["event_time"]))
        for tid, t in scenario.second_oracle.transactions.items()
        if tid not in scenario.first_oracle.transactions
        and not t["late"]
        and t["event_time"] < DAY0 + timedelta(days=1)
    }
    assert straggler_hours
    for key in straggler_hours:
        assert scenario.second.merchant_hourly[key] == oracle[key]
        assert scenario.second.merchant_hourly[key] != scenario.first.merchant_hourly.get(key)


def test_late_events_are_kept_but_join_no_window(scenario: Scenario) -> None:
    txns = scenario.second_oracle.transactions
    late = {tid for tid, t in txns.items() if t["late"]}
    assert len(late) == 30
    assert late <= set(scenario.second.transactions)
    counted = sum(row[0] for row in scenario.second.merchant_hourly.values())
    assert counted == len(txns) - len(late)


def test_every_build_passes_the_lake_reconciliation(scenario: Scenario) -> None:
    statuses = scenario.second_run.statuses()
    assert statuses["test.riverbed.assert_lake_reconciles"] == "pass"
    assert all(s in ("pass", "success") for s in statuses.values()), statuses


# --------------------------------------------------------------------------------------
# broken input fails the build
# --------------------------------------------------------------------------------------


def _small_lake(home: Path) -> Lake:
    lake = Lake(SyntheticLake(home / "lake"), random.Random(7))
    records = lake.send(make_transactions(lake.rng, 0, 300, day=0))
    lake.raise_alerts(make_alerts(lake.rng, records[:150], share=0.05))
    lake.aggregate_windows(records)
    return lake


def _alert_without_transaction(lake: Lake) -> None:
    # on a record the lake has (another transaction's), so it is within what is loaded
    record = lake.records[-1]
    orphan = dict(
        lake.alerts[0],
        alert_id="al-velocity-tx-missing",
        transaction_id="tx-missing",
        _partition=record["_partition"],
        _offset=record["_offset"],
    )
    lake.raise_alerts([orphan])


def _unknown_channel(lake: Lake) -> None:
    lake.send([dict(make_transactions(lake.rng, 900, 1, day=0)[0], channel="mail")])


@pytest.mark.parametrize(
    ("breakage", "failing_test"),
    [
        (_alert_without_transaction, "relationships_fct_fraud_alerts_transaction_id"),
        (_unknown_channel, "accepted_values_fct_transactions_channel"),
    ],
    ids=["alert-without-transaction", "unknown-channel"],
)
def test_broken_input_fails_the_build(tmp_path: Path, breakage: Any, failing_test: str) -> None:
    home = tmp_path / "riverbed"
    lake = _small_lake(home)
    breakage(lake)
    result = run_dbt(home, "build")
    assert result.returncode != 0, result.output[-4000:]
    failed = [uid for uid, status in result.statuses().items() if status in ("fail", "error")]
    assert any(failing_test in uid for uid in failed), (failed, result.output[-4000:])


def test_records_committed_below_a_loaded_offset_fail_the_reconciliation(tmp_path: Path) -> None:
    """A writer breaking the contract (records committed out of offset order, below
    what a build already loaded) is caught: the build cannot load them, and the
    reconciliation with the lake names them."""
    home = tmp_path / "riverbed"
    lake = Lake(SyntheticLake(home / "lake"), random.Random(11))
    lake.lake.offsets.next_offset = {p: 5 for p in range(lake.lake.offsets.partitions)}
    lake.send(make_transactions(lake.rng, 0, 60, day=0))  # offsets 0..4 left unused
    assert run_dbt(home, "build").ok
    stray = make_transactions(lake.rng, 500, 1, day=0)[0]
    stray.update(_topic="payments.transactions", _partition=0, _offset=2)
    table = lake.lake.to_table("transactions", [stray])
    write_deltalake(
        lake.lake.dataset_dir("transactions"),
        lake_tables.with_event_date("transactions", table),
        mode="append",
    )
    result = run_dbt(home, "build")
    assert result.returncode != 0, result.output[-4000:]
    assert result.statuses()["test.riverbed.assert_lake_reconciles"] == "fail"
