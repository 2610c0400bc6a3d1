"""Recall and precision of the fraud rules against the producer's ground truth.

The producer labels every transaction of an injected fraud pattern with its
kind (``GeneratedEvent.fraud_kind``, grouped by ``pattern_id``). Here the
partition processors run over 150,000 generated events, partitioned by key:

* recall: the share of patterns whose kind raised at least one alert on one of
  the pattern's transactions (patterns cut off by the end of the sample before
  they have the transactions their rule needs are left out);
* precision: the share of alerts on a transaction labelled with that alert's kind.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest

from flows.config import FlowConfig
from flows.fraud import AMOUNT_SPIKE, CARD_TESTING, IMPOSSIBLE_TRAVEL, RULES, VELOCITY
from flows.processor import PartitionProcessor
from flows.records import AlertRecord, SourceBatch
from producers.payments import GeneratedEvent, GeneratorConfig, PaymentsGenerator

EVENTS = 150_000
RATE = 200.0


def measure(
    events: list[GeneratedEvent], start: float, rate: float
) -> tuple[dict[str, float], dict[str, float]]:
    parts: dict[int, list] = defaultdict(list)
    for i, e in enumerate(events):
        p = zlib.crc32(e.key) % 6
        # The Kafka timestamp a live producer gives it: the generator's clock when it is
        # sent. (The wall clock of the test run would turn the generator's "too far in
        # the future" events valid whenever the run is late enough after ``start``.)
        sent_ms = int((start + i / rate) * 1000)
        parts[p].append((len(parts[p]), e.key, e.value, sent_ms))
    alerts: list[AlertRecord] = []
    for p, recs in parts.items():
        processor = PartitionProcessor(p, FlowConfig())
        for i in range(0, len(recs), 5000):
            chunk = recs[i : i + 5000]
            alerts += processor.process(SourceBatch(p, chunk, chunk[-1][0] + 1), 0).batch.alerts

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
