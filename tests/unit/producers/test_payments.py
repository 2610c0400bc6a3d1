"""The payments generator: deterministic, valid by contract, and honest about its labels.

The fraud rules are recomputed here naively, over the stream in arrival order
as the flow sees it, so the labels are checked against the thresholds the flow
uses and not against the generator's own idea of them.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from producers.payments import (
    AMOUNT_SPIKE,
    CARD_TESTING,
    CITIES,
    FRAUD_KINDS,
    IMPOSSIBLE_TRAVEL,
    INVALID_KINDS,
    VELOCITY,
    GeneratedEvent,
    GeneratorConfig,
    PaymentsGenerator,
    haversine_km,
)
from riverbed.contracts.payments import InvalidEvent, Transaction, decode_transaction
from riverbed.contracts.reference import COUNTRIES, CURRENCIES
from riverbed.settings import load_settings

START = datetime(2026, 3, 2, 9, 30, tzinfo=UTC).timestamp()
N_EVENTS = 50_000
RATE = 20.0  # events/s of event time: 50,000 events span ~42 minutes
WARM_UP_S = 900.0  # late events and fraud patterns reach their steady share by then
DEFAULTS = GeneratorConfig()
HIGH_SHARES = GeneratorConfig(
    fraud_share=0.05, late_share=0.03, duplicate_share=0.03, invalid_share=0.02
)


@dataclass(frozen=True)
class Emitted:
    event: GeneratedEvent
    clock: float  # the generator's clock right after it produced the event


def emit(config: GeneratorConfig, *, seed: int, n: int, rate: float = RATE) -> list[Emitted]:
    gen = PaymentsGenerator(config, seed=seed, start=START, rate=rate)
    return [Emitted(event, gen.clock) for event in itertools.islice(gen, n)]


@pytest.fixture(scope="module")
def stream() -> list[Emitted]:
    return emit(HIGH_SHARES, seed=7, n=N_EVENTS)


# --- determinism ----------------------------------------------------------------------------


def wire(events: Iterable[GeneratedEvent]) -> list[tuple[bytes, bytes]]:
    return [(e.key, e.value) for e in events]


def first(n: int, gen: PaymentsGenerator) -> list[GeneratedEvent]:
    return list(itertools.islice(gen, n))


def test_same_seed_and_start_give_the_same_events() -> None:
    a = first(20_000, PaymentsGenerator(HIGH_SHARES, seed=42, start=START, rate=RATE))
    b = first(20_000, PaymentsGenerator(HIGH_SHARES, seed=42, start=START, rate=RATE))
    assert a == b  # bytes and labels


def test_another_seed_or_start_gives_other_events() -> None:
    base = wire(first(1000, PaymentsGenerator(DEFAULTS, seed=42, start=START, rate=RATE)))
    other_seed = wire(first(1000, PaymentsGenerator(DEFAULTS, seed=43, start=START, rate=RATE)))
    later = wire(first(1000, PaymentsGenerator(DEFAULTS, seed=42, start=START + 1, rate=RATE)))
    assert base != other_seed
    assert base != later


def test_transaction_ids_do_not_repeat_across_runs() -> None:
    def ids(seed: int, start: float) -> set[str]:
        gen = PaymentsGenerator(DEFAULTS, seed=seed, start=start, rate=RATE)
        return {e.transaction_id for e in first(1000, gen)}

    assert not ids(1, START) & ids(2, START)
    assert not ids(1, START) & ids(1, START + 60)


def test_transaction_ids_are_unique_within_a_run_past_the_id_blocks() -> None:
    # Ids are built from blocks of 4,096 precomputed serials: cross two block edges.
    events = first(10_000, PaymentsGenerator(HIGH_SHARES, seed=7, start=START, rate=RATE))
    originals = [e.transaction_id for e in events if not e.resent]
    assert len(originals) > 8_192
    assert len(set(originals)) == len(originals)
    assert {e.transaction_id for e in events if e.resent} <= set(originals)


# --- the contract ---------------------------------------------------------------------------


def decode(item: Emitted) -> tuple[Transaction, datetime]:
    return decode_transaction(item.event.value, now=datetime.fromtimestamp(item.clock, UTC))


def test_every_valid_event_passes_the_contract(stream: list[Emitted]) -> None:
    valid = [item for item in stream if item.event.valid]
    assert len(valid) > 0.95 * N_EVENTS
    for item in valid:
        txn, event_time = decode(item)
        event = item.event
        assert txn.transaction_id == event.transaction_id
        assert txn.card_id == event.card_id == event.key.decode()
        assert abs(event_time.timestamp() - event.event_time) < 0.001
        assert event.event_time <= item.clock


def test_every_invalid_event_fails_the_contract(stream: list[Emitted]) -> None:
    invalid = [item for item in stream if not item.event.valid]
    for item in invalid:
        with pytest.raises(InvalidEvent):
            decode(item)
    assert {item.event.invalid_reason for item in invalid} == set(INVALID_KINDS)


def test_normal_events_look_like_everyday_spending(stream: list[Emitted]) -> None:
    for item in stream:
        event = item.event
        if not event.valid or event.pattern_id is not None:
            continue
        txn, _ = decode(item)
        assert 2.0 <= txn.amount < 500.0
        assert (txn.channel == "atm") == (txn.mcc == "6011")
        assert txn.currency in CURRENCIES
        assert txn.country in COUNTRIES


def test_the_cities_are_real_codes() -> None:
    assert len(CITIES) >= 40
    for city in CITIES:
        assert city.country in COUNTRIES
        assert city.currency in CURRENCIES
        assert -90 <= city.lat <= 90 and -180 <= city.lon <= 180


# --- shares ---------------------------------------------------------------------------------


def steady(stream: list[Emitted]) -> list[GeneratedEvent]:
    return [item.event for item in stream if item.clock >= START + WARM_UP_S]


@pytest.mark.parametrize("config", [DEFAULTS, HIGH_SHARES], ids=["defaults", "high-shares"])
def test_noise_and_fraud_come_at_the_configured_shares(config: GeneratorConfig) -> None:
    events = steady(emit(config, seed=11, n=N_EVENTS))
    n = len(events)
    observed = {
        "fraud": sum(e.fraud_kind is not None for e in events) / n,
        "late": sum(e.late for e in events) / n,
        "duplicate": sum(e.resent for e in events) / n,
        "invalid": sum(not e.valid for e in events) / n,
    }
    expected = {
        "fraud": config.fraud_share,
        "late": config.late_share,
        "duplicate": config.duplicate_share,
        "invalid": config.invalid_share,
    }
    for name, share in expected.items():
        assert observed[name] == pytest.approx(share, rel=0.25), name


def test_zero_shares_give_only_normal_events() -> None:
    quiet = GeneratorConfig(fraud_share=0, late_share=0, duplicate_share=0, invalid_share=0)
    events = [item.event for item in emit(quiet, seed=3, n=5000)]
    assert all(e.valid and not e.late and not e.resent and e.pattern_id is None for e in events)


def test_a_resent_event_repeats_an_earlier_one_byte_for_byte(stream: list[Emitted]) -> None:
    seen: dict[str, bytes] = {}
    resent = 0
    for item in stream:
        event = item.event
        if event.resent:
            resent += 1
            assert seen[event.transaction_id] == event.value
        elif event.valid:
            seen.setdefault(event.transaction_id, event.value)
    assert resent > 0


def test_late_events_are_two_to_ten_minutes_behind(stream: list[Emitted]) -> None:
    late = [item for item in stream if item.event.late]
    assert late
    for item in late:
        assert 120.0 <= item.clock - item.event.event_time <= 600.0 + 5.0
    fresh = [item for item in stream if not (item.event.late or item.event.resent)]
    assert max(item.clock - item.event.event_time for item in fresh) < 1.0


# --- fraud: the naive rules -------------------------------------------------------------------


@dataclass
class CardHistory:
    times: list[float] = field(default_factory=list)
    tiny_times: list[float] = field(default_factory=list)
    amount_sum: float = 0.0
    last: tuple[float, float, float] | None = None  # event time, lat, lon (arrival order)


def rule_hits(stream: Iterable[Emitted], cfg: GeneratorConfig = HIGH_SHARES) -> dict[str, set[str]]:
    """transaction_ids each rule flags, computed over valid, first-seen events in arrival order."""
    hits: dict[str, set[str]] = defaultdict(set)
    cards: dict[str, CardHistory] = defaultdict(CardHistory)
    seen: set[str] = set()
    for item in stream:
        event = item.event
        if not event.valid or event.transaction_id in seen:
            continue
        seen.add(event.transaction_id)
        txn, _ = decode(item)
        t, h = event.event_time, cards[txn.card_id]
        h.times.append(t)
        if sum(t - cfg.velocity_window_s <= x <= t for x in h.times) >= cfg.velocity_count:
            hits[VELOCITY].add(txn.transaction_id)
        n_prior = len(h.times) - 1
        if (
            n_prior
            and txn.amount > cfg.spike_min_amount
            and txn.amount > cfg.spike_factor * h.amount_sum / n_prior
        ):
            hits[AMOUNT_SPIKE].add(txn.transaction_id)
        h.amount_sum += txn.amount
        if h.last is not None:
            last_t, last_lat, last_lon = h.last
            km = haversine_km(last_lat, last_lon, txn.lat, txn.lon)
            hours = abs(t - last_t) / 3600
            if km > 0 and (hours == 0 or km / hours > cfg.travel_kmh):
                hits[IMPOSSIBLE_TRAVEL].add(txn.transaction_id)
        h.last = (t, txn.lat, txn.lon)
        if txn.amount < cfg.testing_max_amount:
            h.tiny_times.append(t)
            recent = sum(t - cfg.testing_window_s <= x <= t for x in h.tiny_times)
            if recent >= cfg.testing_count:
                hits[CARD_TESTING].add(txn.transaction_id)
    return hits


@pytest.fixture(scope="module")
def hits(stream: list[Emitted]) -> dict[str, set[str]]:
    return rule_hits(stream)


def complete_patterns(stream: list[Emitted]) -> dict[int, list[GeneratedEvent]]:
    """Patterns that started early enough to be wholly emitted within the stream."""
    patterns: dict[int, list[GeneratedEvent]] = defaultdict(list)
    for item in stream:
        if item.event.pattern_id is not None and not item.event.resent:
            patterns[item.event.pattern_id].append(item.event)
    cutoff = stream[-1].clock - 1800.0
    return {pid: evs for pid, evs in patterns.items() if evs[0].event_time < cutoff}


def test_every_fraud_kind_is_injected(stream: list[Emitted]) -> None:
    kinds = Counter(item.event.fraud_kind for item in stream if item.event.fraud_kind)
    assert set(kinds) == set(FRAUD_KINDS)
    assert min(kinds.values()) >= 20


def test_every_pattern_meets_its_rule(stream: list[Emitted], hits: dict[str, set[str]]) -> None:
    patterns = complete_patterns(stream)
    assert len(patterns) > 100
    for pid, events in patterns.items():
        fraud = [e for e in events if e.fraud_kind]
        kind = fraud[0].fraud_kind
        assert kind is not None
        assert {e.fraud_kind for e in fraud} == {kind}
        assert len({e.card_id for e in events}) == 1, pid
        assert {e.transaction_id for e in fraud} & hits[kind], (pid, kind)


def test_velocity_bursts_and_card_testing_series_have_their_shape(stream: list[Emitted]) -> None:
    by_pattern = complete_patterns(stream)
    for events in by_pattern.values():
        kind = next(e.fraud_kind for e in events if e.fraud_kind)
        times = sorted(e.event_time for e in events)
        if kind == VELOCITY:
            assert 6 <= len(events) <= 8
            assert times[-1] - times[0] <= 31.0
        elif kind == CARD_TESTING:
            amounts = [decode_transaction(e.value, now=_far_future())[0] for e in events]
            assert 4 <= len(events) <= 6
            assert times[-1] - times[0] <= 300.0
            assert all(0.5 <= t.amount < 2.0 and t.channel == "online" for t in amounts)


def test_spikes_are_large_against_the_cards_mean(stream: list[Emitted]) -> None:
    spikes = [item.event for item in stream if item.event.fraud_kind == AMOUNT_SPIKE]
    spiked_before: set[str] = set()
    for event in spikes:
        txn, _ = decode_transaction(event.value, now=_far_future())
        # 2,000-9,000; more only when an earlier spike on the card raised its mean
        assert 2000.0 <= txn.amount <= 9000.0 or (
            txn.amount > 9000.0 and event.card_id in spiked_before
        )
        spiked_before.add(event.card_id)


def test_impossible_travel_needs_more_than_the_speed_limit(stream: list[Emitted]) -> None:
    for events in complete_patterns(stream).values():
        if not any(e.fraud_kind == IMPOSSIBLE_TRAVEL for e in events):
            continue
        home, far = (decode_transaction(e.value, now=_far_future())[0] for e in events)
        hours = (events[1].event_time - events[0].event_time) / 3600
        assert 120 / 3600 <= hours <= 1200 / 3600 + 1e-9
        assert haversine_km(home.lat, home.lon, far.lat, far.lon) / hours > 2 * 900


def test_normal_traffic_rarely_trips_a_rule(
    stream: list[Emitted], hits: dict[str, set[str]]
) -> None:
    normal = {
        item.event.transaction_id
        for item in stream
        if item.event.valid and item.event.fraud_kind is None and not item.event.resent
    }
    flagged = set().union(*hits.values()) & normal
    assert len(flagged) / len(normal) < 0.005, Counter(
        rule for rule, ids in hits.items() for _ in ids & normal
    )


# --- clock and rhythm ---------------------------------------------------------------------------


def test_with_a_wall_clock_no_event_is_in_the_future() -> None:
    wall = iter(itertools.count(START, 0.0001))  # a wall clock far slower than the event rate

    def now() -> float:
        return next(wall)

    gen = PaymentsGenerator(HIGH_SHARES, seed=5, start=START, rate=1000.0, wall_clock=now)
    for event in itertools.islice(gen, 20_000):
        assert event.event_time <= gen.clock
        assert gen.clock <= START + 20_000 * 0.0001 * 3  # held to the wall clock, not run ahead


def test_nights_are_quieter_than_days() -> None:
    quiet = GeneratorConfig(fraud_share=0, late_share=0, duplicate_share=0, invalid_share=0)
    events = [item.event for item in emit(quiet, seed=9, n=86_400, rate=1.0)]  # one day
    offsets = {city.country + city.currency: city.utc_offset_h for city in CITIES}
    by_local_hour: Counter[int] = Counter()
    for event in events:
        txn, _ = decode_transaction(event.value, now=_far_future())
        offset = offsets[txn.country + txn.currency]
        by_local_hour[math.floor(event.event_time / 3600 + offset) % 24] += 1
    night = sum(by_local_hour[h] for h in (2, 3, 4))
    day = sum(by_local_hour[h] for h in (12, 13, 14))
    assert night * 3 < day


def test_settings_feed_the_generator() -> None:
    settings = load_settings(producer_cards=123, producer_merchants=45, producer_fraud_share=0.1)
    config = GeneratorConfig.from_settings(settings)
    gen = PaymentsGenerator(config, seed=1, start=START, rate=RATE)
    assert len(gen.population.card_ids) == 123
    assert len(gen.population.merchants) == 45
    assert config.fraud_share == 0.1


def test_a_tiny_population_still_works() -> None:
    config = GeneratorConfig(cards=1, merchants=1)
    events = first(2000, PaymentsGenerator(config, seed=1, start=START, rate=0.01))
    assert {e.card_id for e in events} == {"card-0"}


def _far_future() -> datetime:
    return datetime(2100, 1, 1, tzinfo=UTC)
