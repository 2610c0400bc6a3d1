"""Recall and precision of the fraud rules against the producer's ground truth.

The producer labels every transaction of an injected fraud pattern with its
kind (``GeneratedEvent.fraud_kind``, grouped by ``pattern_id``). Here the
partition processors run over 150,000 generated events, partitioned by key:

* recall: the share of patterns whose kind raised at least one alert on one of
  the pattern's transactions (patterns cut off by the end of the sample before
  they have the transactions their rule needs are left out);
* precision: the share of alerts on a transaction labelled with that alert's kind.

With card profiles (the batch layer's, computed with polars from an earlier stretch of
the same traffic), the profile_amount rule catches amount fraud on cards whose
history the stream's state no longer holds (a fresh start, a card idle past its TTL).
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections import Counter, defaultdict
from datetime import UTC, datetime

import polars as pl
import pytest

from flows.kit.records import SourceBatch
from flows.payments.config import FlowConfig
from flows.payments.fraud import (
    AMOUNT_SPIKE,
    CARD_TESTING,
    IMPOSSIBLE_TRAVEL,
    PROFILE_AMOUNT,
    VELOCITY,
)
from flows.payments.fraud import STREAM_RULES as RULES  # no profiles here: the stream's own rules
from flows.payments.processor import PartitionProcessor
from flows.payments.records import AlertRecord
from producers.payments import GeneratedEvent, GeneratorConfig, PaymentsGenerator
from riverbed.contracts.payments import CardProfile, encode
from riverbed.features import profiles_from

EVENTS = 150_000
RATE = 200.0


def measure(
    events: list[GeneratedEvent], start: float, rate: float
) -> tuple[dict[str, float], dict[str, float]]:
    alerts = _judge(events, start, rate, table=[])

    kind_of = {e.transaction_id: e.fraud_kind for e in events}
    patterns: dict[tuple[int, str], set[str]] = defaultdict(set)
    for e in events:
        if e.fraud_kind and e.pattern_id is not None:
            patterns[(e.pattern_id, e.fraud_kind)].add(e.transaction_id)
    # A pattern counts once the sample holds enough of its labelled transactions for
    # its rule to fire: one that starts near the end of the sample may be cut short
    # (a card-testing series spans up to 5 minutes, an impossible journey 20).
    config = FlowConfig()
    needed = {
        VELOCITY: config.velocity_count,
        CARD_TESTING: config.testing_count,
        AMOUNT_SPIKE: 1,
        IMPOSSIBLE_TRAVEL: 1,
    }
    complete = {k: v for k, v in patterns.items() if len(v) >= needed[k[1]]}

    by_rule_alerts: dict[str, set[str]] = defaultdict(set)
    for a in alerts:
        by_rule_alerts[a.rule].add(a.transaction_id)
    recall, precision = {}, {}
    for rule in RULES:
        mine = {k: v for k, v in complete.items() if k[1] == rule}
        hit = sum(1 for txns in mine.values() if txns & by_rule_alerts[rule])
        recall[rule] = hit / len(mine) if mine else 1.0
        fired = [a for a in alerts if a.rule == rule]
        right = sum(1 for a in fired if kind_of[a.transaction_id] == rule)
        precision[rule] = right / len(fired) if fired else 1.0
    return recall, precision


@pytest.mark.parametrize("utc_hour", [2, 14])  # the traffic moves between cities by hour
def test_recall_and_precision_against_the_ground_truth(utc_hour: int) -> None:
    start = datetime(2026, 11, 29, utc_hour, tzinfo=UTC).timestamp()
    gen = PaymentsGenerator(GeneratorConfig(), seed=2026, start=start, rate=RATE)
    events = []
    for e in gen:
        events.append(e)
        if len(events) == EVENTS:
            break
    assert Counter(e.fraud_kind for e in events if e.fraud_kind).keys() == set(RULES)
    recall, precision = measure(events, start, RATE)
    print("recall", recall, "precision", precision)
    # Every pattern is caught: the generator keeps a pattern's card out of other
    # patterns until they can no longer share a rule's window.
    assert recall == dict.fromkeys(RULES, 1.0), recall
    assert min(precision.values()) >= 0.95, precision


def test_profiles_catch_amount_fraud_that_a_fresh_stream_state_misses() -> None:
    """Profiles from 60,000 events of history, then 40,000 events judged by processors
    that start empty: amount-fraud recall without and with the profiles, and the
    profile rule's precision."""
    history_n, judged_n = 60_000, 40_000
    start = datetime(2026, 11, 29, 14, tzinfo=UTC).timestamp()
    gen = PaymentsGenerator(GeneratorConfig(), seed=2026, start=start, rate=RATE)
    events = list(itertools.islice(gen, history_n + judged_n))
    history, judged = events[:history_n], events[history_n:]
    rows = [json.loads(e.value) for e in history if e.valid and not e.resent]
    frame = (
        pl.DataFrame(rows)
        .lazy()
        .with_columns(pl.col("event_time").str.to_datetime(time_zone="UTC"))
    )
    profiles = profiles_from(frame, window_days=30, min_txns=5)
    assert profiles.height > 1000
    profiled_at_ms = int((start + history_n / RATE) * 1000) - 1
    table = [
        (i, r["card_id"].encode(), encode(CardProfile(**r, **_PUBLISHED)), profiled_at_ms)
        for i, r in enumerate(profiles.drop("last_event_time").iter_rows(named=True))
    ]

    kind_of = {e.transaction_id: e.fraud_kind for e in judged}
    spikes: dict[int, set[str]] = defaultdict(set)
    for e in judged:
        if e.fraud_kind == AMOUNT_SPIKE and e.pattern_id is not None:
            spikes[e.pattern_id].add(e.transaction_id)
    found = {}
    for with_profiles in (False, True):
        alerts = _judge(judged, start + history_n / RATE, RATE, table if with_profiles else [])
        amount = {a.transaction_id for a in alerts if a.rule in (AMOUNT_SPIKE, PROFILE_AMOUNT)}
        by_profile = [a for a in alerts if a.rule == PROFILE_AMOUNT]
        found[with_profiles] = (
            sum(1 for txns in spikes.values() if txns & amount) / len(spikes),
            sum(1 for a in by_profile if kind_of[a.transaction_id] == AMOUNT_SPIKE)
            / max(1, len(by_profile)),
            len(by_profile),
        )
    print("amount fraud (recall, profile_amount precision, its alerts):", found)
    (recall_without, _, none), (recall_with, precision, fired) = found[False], found[True]
    assert none == 0 and fired > 0
    assert recall_without < 0.95 <= recall_with  # the stream alone misses some
    assert precision >= 0.95


_PUBLISHED = {
    "last_event_time": "2026-11-29T14:00:00Z",
    "computed_at": "2026-11-29T14:00:00Z",
    "window_days": 30,
}


def _judge(
    events: list[GeneratedEvent], start: float, rate: float, table: list
) -> list[AlertRecord]:
    """Fresh processors over ``events``, partitioned by key, with the profile records
    ``table`` in force."""
    parts: dict[int, list] = defaultdict(list)
    for i, e in enumerate(events):
        p = zlib.crc32(e.key) % 6
        # The Kafka timestamp a live producer gives it: the generator's clock when it is
        # sent. (The wall clock of the test run would turn the generator's "too far in
        # the future" events valid whenever the run is late enough after ``start``.)
        parts[p].append((len(parts[p]), e.key, e.value, int((start + i / rate) * 1000)))
    tables: dict[int, list] = defaultdict(list)
    for record in table:
        tables[zlib.crc32(record[1]) % 6].append(record)
    alerts: list[AlertRecord] = []
    for p, recs in parts.items():
        processor = PartitionProcessor(p, FlowConfig())
        for i in range(0, len(recs), 5000):
            chunk = recs[i : i + 5000]
            batch = SourceBatch(p, chunk, chunk[-1][0] + 1, table=tables[p] if i == 0 else None)
            alerts += processor.process(batch, 0).batch.alerts
    return alerts
