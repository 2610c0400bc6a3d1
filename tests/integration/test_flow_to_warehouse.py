"""From Kafka to the marts: the real flow's lake, built by real dbt, against the input.

20,000 generated payments (valid, invalid, late, resent, the four fraud patterns)
go to ``payments.transactions``; the real flow (``flows.payments``, with recovery)
runs until it has landed everything and closed every window; ``dbt build`` builds
the warehouse over its lake. The marts must equal an oracle computed here from the
input alone, as the broker stored it:

* a message is valid if the contract (``decode_transaction``) accepts it with its
  Kafka timestamp as "now", as the flow judges it;
* a transaction counts once, at its first valid copy (a resend repeats it later);
* a transaction is late if its event time is older than its partition's latest
  event time so far minus the allowed lateness (``flows/payments/windows.py``): late ones
  stay in the transactions, marked, and join no window.

Then the same generator goes on for 5,000 more events (new transactions, resends
and late events of earlier ones, fraud patterns in flight across the two batches);
the flow runs again from where it stopped, an incremental ``dbt build`` follows, and
the warehouse must have grown by exactly the new transactions, with nothing loaded
twice and every mart equal to the oracle over the whole input.

The input is fixed: a fixed seed, and a fixed time of day for the first event time
(four minutes before a UTC midnight, so the first batch spans two event_date partitions). The
day is the one before yesterday, not a fixed date, because the topic keeps messages
for seven days; each message's Kafka timestamp is the generator's clock when it made
the message, so the verdicts ("in the future", late) do not depend on when the test
runs. The same traffic every day, under other transaction ids.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.compute as pc
import pytest

from flows.payments.config import FlowConfig
from flows.payments.records import AlertRecord
from producers.payments import GeneratedEvent, GeneratorConfig, PaymentsGenerator
from riverbed import lake
from riverbed.contracts.payments import InvalidEvent, decode_transaction
from riverbed.settings import Settings, load_settings
from tests.support.flow_harness import (
    Record,
    drained,
    read_records,
    reference_alerts,
    run_until,
)
from tests.support.flow_harness import (
    produce as produce_events,
)
from tests.support.lake_fixture import dbt_command

pytestmark = pytest.mark.kafka

SEED = 20261126
FIRST_BATCH = 20_000
SECOND_BATCH = 5_000
RULES = {"velocity", "amount_spike", "impossible_travel", "card_testing"}
DAY_S = 86_400
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
HOUR_US = 3_600_000_000
# Events per second of event time: slow enough that the first batch spans 500 s, so
# late events (2-10 minutes late) and card testing (up to 5 minutes) happen in it.
RATE = 40.0


# -- the input ----------------------------------------------------------------------------


def first_event_time() -> float:
    """Four minutes before the UTC midnight that began yesterday."""
    return (time.time() // DAY_S) * DAY_S - DAY_S - 240


class Input:
    """One generator, continued batch after batch; the Kafka timestamp of each event is
    the generator's clock when it emitted the event (late events come after their time)."""

    def __init__(self) -> None:
        self.generator = PaymentsGenerator(
            GeneratorConfig(), seed=SEED, start=first_event_time(), rate=RATE
        )
        self._events: Iterator[GeneratedEvent] = iter(self.generator)

    def produce(self, settings: Settings, n: int) -> list[GeneratedEvent]:
        """The next ``n`` events, published; every one acknowledged."""
        batch, stamps = [], []
        for event in self._events:
            batch.append(event)
            stamps.append(int(self.generator.clock * 1000))
            if len(batch) == n:
                break
        produce_events(settings, batch, timestamps_ms=stamps)
        return batch


# -- the oracle ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Txn:
    """A valid transaction's first copy, as the oracle sees it."""

    transaction_id: str
    card_id: str
    merchant_id: str
    country: str
    cents: int
    event_us: int
    late: bool
    partition: int
    offset: int


def money(cents: int) -> Decimal:
    return Decimal(cents) / 100


@dataclass
class Oracle:
    """The marts, computed from the topic's records (and the reference alerts)."""

    txns: dict[str, Txn]
    alerts: list[AlertRecord]
    invalid: int
    resent: int

    @classmethod
    def of(cls, records: Sequence[Record], config: FlowConfig) -> Oracle:
        txns: dict[str, Txn] = {}
        invalid = resent = 0
        latest: dict[int, int] = {}  # per partition: the latest event time so far
        for p, o, _key, value, ts_ms in sorted(records, key=lambda r: (r[0], r[1])):
            try:
                txn, event_time = decode_transaction(value, EPOCH + timedelta(milliseconds=ts_ms))
            except InvalidEvent:
                invalid += 1
                continue
            if txn.transaction_id in txns:
                resent += 1
                continue
            event_us = (event_time - EPOCH) // ONE_US
            seen = latest.get(p)
            late = seen is not None and event_us < seen - config.allowed_lateness_us
            if seen is None or event_us > seen:
                latest[p] = event_us
            txns[txn.transaction_id] = Txn(
                txn.transaction_id,
                txn.card_id,
                txn.merchant_id,
                txn.country,
                round(txn.amount * 100),
                event_us,
                late,
                p,
                o,
            )
        return cls(txns, reference_alerts(records, config), invalid, resent)

    @property
    def on_time(self) -> list[Txn]:
        return [t for t in self.txns.values() if not t.late]

    def fct_transactions(self) -> dict[str, tuple[Any, ...]]:
        return {
            t.transaction_id: (
                t.card_id,
                t.merchant_id,
                money(t.cents),
                t.event_us,
                t.late,
                t.partition,
                t.offset,
            )
            for t in self.txns.values()
        }

    def dim(self, key: str) -> dict[str, tuple[Any, ...]]:
        """dim_cards (``card_id``) or dim_merchants (``merchant_id``): count, sum, first
        and last event time, alerts on the member's transactions."""
        members: dict[str, list[Txn]] = defaultdict(list)
        for t in self.txns.values():
            members[getattr(t, key)].append(t)
        alerts = Counter(getattr(self.txns[a.transaction_id], key) for a in self.alerts)
        return {
            k: (
                len(ts),
                money(sum(t.cents for t in ts)),
                min(t.event_us for t in ts),
                max(t.event_us for t in ts),
                alerts[k],
            )
            for k, ts in members.items()
        }

    def merchant_countries(self) -> dict[str, str]:
        countries = {(t.merchant_id, t.country) for t in self.txns.values()}
        assert len(countries) == len({m for m, _c in countries}), "a merchant in two countries"
        return dict(countries)

    def merchant_hourly(self, window_us: int) -> dict[tuple[str, int], tuple[Any, ...]]:
        """agg_merchant_hourly: the on-time transactions per merchant and UTC hour."""
        groups: dict[tuple[str, int], list[Txn]] = defaultdict(list)
        for t in self.on_time:
            groups[(t.merchant_id, t.event_us - t.event_us % HOUR_US)].append(t)
        alerted = Counter(a.transaction_id for a in self.alerts)
        return {
            key: (
                len(ts),
                money(sum(t.cents for t in ts)),
                money(min(t.cents for t in ts)),
                money(max(t.cents for t in ts)),
                len({t.event_us // window_us for t in ts}),
                sum(alerted[t.transaction_id] for t in ts),
            )
            for key, ts in groups.items()
        }


# -- the warehouse ------------------------------------------------------------------------


@dataclass
class Warehouse:
    """What a build left in warehouse.duckdb."""

    fct_transactions: dict[str, tuple[Any, ...]]
    loaded_at: dict[str, datetime]
    duplicate_transactions: int
    alerts: list[tuple[str, str, str, str]]  # alert_id, rule, card_id, transaction_id
    alert_card_matches: int
    dim_cards: dict[str, tuple[Any, ...]]
    dim_merchants: dict[str, tuple[Any, ...]]
    merchant_home: dict[str, str]
    merchant_hourly: dict[tuple[str, int], tuple[Any, ...]]
    hourly_means: dict[tuple[str, int], float]
    daily_alerts: int

    @classmethod
    def of(cls, home: Path) -> Warehouse:
        con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
        try:

            def rows(sql: str) -> list[tuple[Any, ...]]:
                return con.execute(sql).fetchall()

            def scalar(sql: str) -> Any:
                return rows(sql)[0][0]

            dims = (
                "select {key}, txn_count, amount_sum, epoch_us(first_seen_at), "
                "epoch_us(last_seen_at), alert_count from {table}"
            )
            hourly = rows(
                "select merchant_id, epoch_us(hour_start), txn_count, amount_sum, amount_min, "
                "amount_max, active_minutes, alert_count, amount_mean from agg_merchant_hourly"
            )
            fct = rows(
                "select transaction_id, card_id, merchant_id, amount, epoch_us(event_time), "
                "is_late, _partition, _offset, _loaded_at from fct_transactions"
            )
            return cls(
                fct_transactions={r[0]: r[1:-1] for r in fct},
                loaded_at={r[0]: r[-1] for r in fct},
                duplicate_transactions=len(fct) - len({r[0] for r in fct}),
                alerts=rows("select alert_id, rule, card_id, transaction_id from fct_fraud_alerts"),
                alert_card_matches=scalar(
                    "select count(*) from fct_fraud_alerts a join fct_transactions t "
                    "using (transaction_id) where a.card_id = t.card_id"
                ),
                dim_cards={
                    r[0]: r[1:] for r in rows(dims.format(key="card_id", table="dim_cards"))
                },
                dim_merchants={
                    r[0]: r[1:] for r in rows(dims.format(key="merchant_id", table="dim_merchants"))
                },
                merchant_home=dict(
                    rows("select merchant_id, home_country_code from dim_merchants")
                ),
                merchant_hourly={(r[0], r[1]): r[2:-1] for r in hourly},
                hourly_means={(r[0], r[1]): r[-1] for r in hourly},
                daily_alerts=scalar("select coalesce(sum(alert_count), 0) from fct_fraud_daily"),
            )
        finally:
            con.close()


def assert_warehouse_matches(wh: Warehouse, oracle: Oracle, config: FlowConfig) -> None:
    expected = oracle.fct_transactions()
    assert wh.duplicate_transactions == 0, "a transaction_id is in fct_transactions twice"
    missing, extra = (
        set(expected) - set(wh.fct_transactions),
        set(wh.fct_transactions) - set(expected),
    )
    assert not missing and not extra, (
        f"fct_transactions: {len(missing)} missing (e.g. {sorted(missing)[:3]}), "
        f"{len(extra)} unexpected (e.g. {sorted(extra)[:3]})"
    )
    assert sum(r[2] for r in wh.fct_transactions.values()) == money(
        sum(t.cents for t in oracle.txns.values())
    )
    wrong = [k for k, v in expected.items() if wh.fct_transactions[k] != v]
    assert not wrong, (
        f"{len(wrong)} transactions differ (card, merchant, amount, event time, late, "
        f"partition, offset), e.g. {wh.fct_transactions[wrong[0]]} != {expected[wrong[0]]}"
    )

    assert wh.dim_merchants == oracle.dim("merchant_id")
    assert wh.merchant_home == oracle.merchant_countries()
    assert wh.dim_cards == oracle.dim("card_id")

    want = oracle.merchant_hourly(config.window_us)
    got = wh.merchant_hourly
    differ = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    assert not differ, (
        f"agg_merchant_hourly: {len(differ)} of {len(want)} (merchant, hour) rows differ, "
        f"e.g. {differ[0]}: warehouse {got.get(differ[0])} != oracle {want.get(differ[0])}"
    )
    for key, (count, total, *_rest) in want.items():
        assert wh.hourly_means[key] == pytest.approx(float(total) / count)

    assert {r[1] for r in wh.alerts} <= RULES
    ids = Counter(r[0] for r in wh.alerts)
    assert max(ids.values()) == 1, "an alert is in fct_fraud_alerts twice"
    assert set(ids) == {a.alert_id for a in oracle.alerts}
    assert all(r[3] in wh.fct_transactions for r in wh.alerts), "an alert without its transaction"
    assert wh.alert_card_matches == len(wh.alerts), "an alert on another card's transaction"
    assert wh.daily_alerts == len(oracle.alerts)


# -- running it ---------------------------------------------------------------------------


def windows_closed(settings: Settings) -> bool:
    """Every on-time transaction of the lake is counted in its window (merchant_minute
    holds one row per merchant and window: late corrections are upserts)."""
    windows = lake.read_table(settings.lake_dir, "merchant_minute", columns=["txn_count"])
    late = lake.read_table(settings.lake_dir, "transactions", columns=["late"]).column("late")
    counted = pc.sum(windows.column("txn_count")).as_py() or 0
    on_time = len(late) - (pc.sum(pc.cast(late, "int64")).as_py() or 0)
    return counted == on_time


def land(settings: Settings) -> None:
    """Run the flow until it consumed the whole topic and closed every window."""
    topic_read = drained(settings)
    run_until(
        settings,
        lambda: topic_read() and windows_closed(settings),
        timeout=90,
        what="the flow to land the whole topic and close its windows",
    )


def build_and_read_oracle(settings: Settings, config: FlowConfig) -> Oracle:
    """``dbt build`` over the lake; meanwhile (dbt runs as a process of its own) the
    oracle is computed from the topic, which the build does not touch."""
    argv, env = dbt_command(settings.home, "build")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        oracle = Oracle.of(read_records(settings), config)
    finally:
        output = proc.communicate()[0].decode(errors="replace")
    assert proc.returncode == 0, output[-6000:]
    return oracle


# -- the test -----------------------------------------------------------------------------


def test_the_warehouse_built_from_the_flows_lake_matches_the_input(
    kafka_settings: Settings,
) -> None:
    settings = load_settings(
        kafka_bootstrap=kafka_settings.bootstrap_servers,
        consumer_group=kafka_settings.consumer_group,
        home=kafka_settings.home.resolve(),
        flush_interval_s=1.0,
        snapshot_interval_s=1,
    )
    config = FlowConfig.from_settings(settings)
    source = Input()

    # First batch: a full build.
    first = source.produce(settings, FIRST_BATCH)
    land(settings)
    oracle = build_and_read_oracle(settings, config)
    before = Warehouse.of(settings.home)

    # The input has what the test is about, and the oracle reads it as the generator meant.
    assert set(oracle.txns) == {e.transaction_id for e in first if e.valid}
    assert {t.transaction_id for t in oracle.txns.values() if t.late} == {
        e.transaction_id for e in first if e.late
    }
    assert oracle.invalid == sum(not e.valid for e in first) > 50
    assert oracle.resent == sum(e.resent for e in first) > 100
    assert sum(t.late for t in oracle.txns.values()) > 30
    assert {a.rule for a in oracle.alerts} == RULES
    dates = {(EPOCH + t.event_us * ONE_US).date() for t in oracle.txns.values()}
    assert len(dates) == 2, "the batch spans a UTC midnight"

    assert len(before.fct_transactions) == len(oracle.txns)
    assert_warehouse_matches(before, oracle, config)

    # Second batch: the generator goes on; the flow resumes; an incremental build.
    second = source.produce(settings, SECOND_BATCH)
    land(settings)
    oracle_after = build_and_read_oracle(settings, config)
    after = Warehouse.of(settings.home)

    new = set(oracle_after.txns) - set(oracle.txns)
    assert new == {e.transaction_id for e in second if e.valid and not e.resent}
    assert any(e.resent and e.transaction_id in oracle.txns for e in second), (
        "the second batch resends transactions of the first"
    )
    assert len(after.fct_transactions) == len(before.fct_transactions) + len(new)
    assert set(after.fct_transactions) - set(before.fct_transactions) == new
    # the rows of the first build stay as they were loaded: not loaded again
    assert {t: after.fct_transactions[t] for t in before.fct_transactions} == (
        before.fct_transactions
    )
    assert {t: after.loaded_at[t] for t in before.loaded_at} == before.loaded_at
    assert_warehouse_matches(after, oracle_after, config)
