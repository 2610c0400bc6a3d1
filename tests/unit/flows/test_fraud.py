"""The fraud rules on one card, in event time."""

from __future__ import annotations

import json

from flows.payments.config import FlowConfig
from flows.payments.fraud import (
    AMOUNT_SPIKE,
    CARD_TESTING,
    IMPOSSIBLE_TRAVEL,
    VELOCITY,
    CardState,
    FraudRules,
    alert_id,
    haversine_km,
)

S = 1_000_000
T0 = 1_800_000_000 * S
PARIS = (48.8566, 2.3522)
TOKYO = (35.6762, 139.6503)
CONFIG = FlowConfig()


def run(txns: list[tuple[int, int, tuple[float, float]]], config: FlowConfig = CONFIG) -> list:
    """(seconds after T0, cents, place) per transaction -> [(index, rule)] hits."""
    card, rules = CardState(), FraudRules(config)
    hits = []
    for i, (sec, cents, (lat, lon)) in enumerate(txns):
        for rule, score, details in rules.check(card, f"tx-{i}", T0 + sec * S, cents, lat, lon):
            assert score > 0 and json.loads(details)
            hits.append((i, rule))
    return hits


def test_velocity_fires_once_per_burst_and_rearms_after_the_window() -> None:
    burst = [(s, 2500, PARIS) for s in range(0, 40, 5)]  # 8 within 40 s
    later = [(300 + s, 2500, PARIS) for s in range(0, 25, 5)]  # 5 more, minutes later
    assert run(burst + later) == [(4, VELOCITY), (12, VELOCITY)]


def test_velocity_needs_the_count_within_the_window() -> None:
    spread = [(s, 2500, PARIS) for s in range(0, 300, 20)]  # 3 per minute at most
    assert run(spread) == []


def test_velocity_counts_a_late_arrival_in_event_time() -> None:
    # Arrival order differs from event-time order: the 5th arrival completes the burst.
    txns = [(0, 2500, PARIS), (10, 2500, PARIS), (40, 2500, PARIS), (50, 2500, PARIS)]
    txns.append((20, 2500, PARIS))
    assert run(txns) == [(4, VELOCITY)]


def test_amount_spike_against_the_running_mean_of_previous_amounts() -> None:
    txns = [(0, 2000, PARIS), (600, 4000, PARIS), (1200, 80_000, PARIS)]
    assert run(txns) == [(2, AMOUNT_SPIKE)]
    # Above 5x the mean but not above the minimum amount: no alert.
    assert run([(0, 1000, PARIS), (600, 40_000, PARIS)]) == []
    # A first transaction has no mean to compare with.
    assert run([(0, 900_000, PARIS)]) == []


def test_impossible_travel_between_consecutive_transactions() -> None:
    assert haversine_km(*PARIS, *TOKYO) > 9000
    assert run([(0, 2500, PARIS), (3600, 2500, TOKYO)]) == [(1, IMPOSSIBLE_TRAVEL)]
    # Twelve hours is enough for a flight.
    assert run([(0, 2500, PARIS), (12 * 3600, 2500, TOKYO)]) == []
    # The same place at the same moment is not travel.
    assert run([(0, 2500, PARIS), (0, 2500, PARIS)]) == []


def test_card_testing_fires_once_then_rearms() -> None:
    small = [(s, 150, PARIS) for s in (0, 60, 120, 180, 240)]
    assert run(small) == [(2, CARD_TESTING)]
    assert run([*small, (1000, 99, PARIS), (1010, 99, PARIS), (1020, 99, PARIS)]) == [
        (2, CARD_TESTING),
        (7, CARD_TESTING),
    ]
    assert run([(s, 250, PARIS) for s in (0, 60, 120)]) == [], "2.50 is not a test amount"


def test_thresholds_come_from_the_config() -> None:
    strict = FlowConfig(velocity_count=3, testing_count=2, travel_kmh=100.0)
    assert run([(0, 2500, PARIS), (5, 2500, PARIS), (10, 2500, PARIS)], strict) == [(2, VELOCITY)]


def test_resends_are_recognised_within_the_ttl_and_count() -> None:
    card = CardState()
    assert not card.seen("a", T0, CONFIG)
    assert card.seen("a", T0, CONFIG)
    small = FlowConfig(resend_max_per_card=3, resend_ttl_us=60 * S)
    card = CardState()
    for i in range(4):
        assert not card.seen(f"t{i}", T0 + i * S, small)
    assert not card.seen("t0", T0, small), "beyond the last 3, a resend is not recognised"
    card = CardState()
    card.seen("old", T0, small)
    card.last_us = T0 + 120 * S
    assert not card.seen("new", T0 + 120 * S, small)
    assert "old" not in card.ids, "older than the TTL: forgotten"


def test_alert_ids_are_deterministic() -> None:
    assert alert_id(VELOCITY, "tx-1") == alert_id(VELOCITY, "tx-1")
    assert alert_id(VELOCITY, "tx-1") != alert_id(CARD_TESTING, "tx-1")
    assert len(alert_id(VELOCITY, "tx-1")) == 16
