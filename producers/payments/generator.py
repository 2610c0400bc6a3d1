"""Realistic card transactions for ``payments.transactions``, with labelled fraud and noise.

A seeded :class:`PaymentsGenerator` simulates a population of cards and merchants
in ~40 real cities. Besides ordinary spending it injects the four fraud patterns
the payments flow detects, late events, resent duplicates and invalid messages,
each at the share the settings ask for. Every event carries its ground truth
(:class:`GeneratedEvent`) outside the wire payload, so a recall/precision
measurement can match alerts against it.

How normal traffic stays clear of the fraud rules (so the labels are the truth):

* a card is not used again for ``card_gap_s`` (longer than the velocity window
  divided by its count), so no card reaches the velocity count by accident;
* normal purchases happen in the card's home city, at merchants close enough
  that the card-gap never implies more than half the travel speed limit;
* normal amounts stay within [testing max amount, spike min amount);
* a card that took part in a fraud pattern is kept out of normal traffic (and out
  of other patterns) until the pattern can no longer combine with normal spending,
  or with a later pattern, into an alert.

Only the generator's own clock is used: ``start`` is a parameter and time
advances with exponential inter-arrivals of mean ``1/rate``, so the same seed
and start give the same bytes. A live producer passes ``wall_clock`` so the
simulated clock follows the wall clock (and never runs into the future).

Amounts are in the merchant's currency's major unit and are not converted
between currencies: the fraud rules compare a card's amounts with each other.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import msgspec
from msgspec.structs import replace as with_changes

from producers.payments.events import (
    AMOUNT_SPIKE,
    CARD_TESTING,
    FRAUD_KINDS,
    IMPOSSIBLE_TRAVEL,
    VELOCITY,
    GeneratedEvent,
)
from producers.payments.population import AMOUNT_TABLE_BITS, GeneratorConfig, build_population
from producers.payments.reference import HOURLY_ACTIVITY, haversine_km
from producers.payments.wire import (
    AMOUNT_TEXT,
    AMOUNT_TEXT_LEN,
    INVALID_KINDS,
    MILLIS_END,
    amount_text,
    corrupt,
)

_FAR_CITY_KM: Final = 2000.0
_RESEND_RING: Final = 512
_MAX_WALL_LAG_S: Final = 1.0
_NIGHT_RETRIES: Final = 6


class PaymentsGenerator:
    """An endless, deterministic stream of :class:`GeneratedEvent`.

    ``start`` is the first event time (seconds since the epoch); ``rate`` the mean
    events per second of event time. With ``wall_clock`` (e.g. ``time.time``) the
    simulated clock is pulled to the wall clock whenever it runs ahead of it, or
    more than a second behind: use it in a live producer, never in a test that
    wants determinism.
    """

    def __init__(
        self,
        config: GeneratorConfig,
        *,
        seed: int,
        start: float,
        rate: float,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0 events/s of event time")
        shares = (
            config.fraud_share,
            config.late_share,
            config.duplicate_share,
            config.invalid_share,
        )
        if sum(shares) >= 0.9:
            raise ValueError("fraud + late + duplicate + invalid shares must stay below 0.9")
        self.config = config
        self.seed = seed
        self._rng = random.Random(seed)
        self.population = build_population(self._rng, config)
        self._clock = float(start)
        self._rate = float(rate)
        self._wall_clock = wall_clock
        # Ids differ between runs with different seeds or start times, and repeat
        # exactly for the same seed and start (a reproduced run).
        id_rng = random.Random(f"{seed}:{round(start * 1000)}")
        self._id_prefix = f"tx-{id_rng.getrandbits(40):010x}-"
        self._transaction_ids = _transaction_ids(self._id_prefix)
        self._next_pattern = 0
        self._seq = 0  # tie-breaker that keeps heap order deterministic
        n_cards = config.cards
        self._card_sum = [0] * n_cards  # cents of the card's transactions so far
        self._card_n = [0] * n_cards
        self._available = list(range(n_cards))
        self._cooling: deque[tuple[float, int]] = deque()
        self._reserved: list[tuple[float, int]] = []
        # (due, seq, card, event): late events and fraud patterns waiting for their time.
        self._scheduled: list[tuple[float, int, int, GeneratedEvent]] = []
        self._late_pending = [0] * n_cards
        self._recent: deque[GeneratedEvent] = deque(maxlen=_RESEND_RING)
        self._kinds = self._possible_kinds()
        self._draw = _DrawTable.for_config(config, self._kinds)
        self._prepare_fragments()
        self._hour_weights = self._hourly_city_weights()
        self._event = self._event_builder()

    # -- public ------------------------------------------------------------------------

    @property
    def clock(self) -> float:
        """The simulated now (seconds since the epoch): no event is later than it."""
        return self._clock

    def __iter__(self) -> Iterator[GeneratedEvent]:
        return self._events()

    def pairs(self) -> Iterator[tuple[bytes, bytes]]:
        """Only the (key, value) of each event: what a producer publishes."""
        for event in self._events():
            yield event.key, event.value

    # -- the hot path ------------------------------------------------------------------

    def _events(self) -> Iterator[GeneratedEvent]:
        # One function with local aliases: at >150k events/s attribute lookups
        # and calls are a large share of the cost. Rare branches call methods.
        rng = self._rng
        rand = rng.random
        getrandbits = rng.getrandbits
        log1p = math.log1p
        floor = math.floor
        rate = self._rate
        wall = self._wall_clock
        scheduled = self._scheduled
        heappop = heapq.heappop
        draw = self._draw
        p_normal, p_invalid, p_resend, p_pattern = (
            draw.normal,
            draw.normal + draw.invalid,
            draw.normal + draw.invalid + draw.resend,
            draw.normal + draw.invalid + draw.resend + draw.pattern,
        )
        total = p_pattern + draw.late
        cooling, reserved = self._cooling, self._reserved
        available, rested_card, unrested = self._available, self._rested_card, self._unrested_card
        cooling_append, cooling_popleft = cooling.append, cooling.popleft
        card_gap = self._card_gap
        city_merchants, card_city = self._city_merchants, self._card_city
        merchant_amounts, make_event = self._merchant_amounts, self._event
        recent = self._recent
        release = self._release_cards
        late_pending = self._late_pending
        clock = self._clock
        while True:
            before = clock
            clock -= log1p(-rand()) / rate  # random.expovariate(rate), without the call
            if wall is not None:
                now = wall()
                if clock > now or clock < now - _MAX_WALL_LAG_S:
                    clock = now if now > before else before  # never backwards
            self._clock = clock
            if (cooling and cooling[0][0] <= clock) or (reserved and reserved[0][0] <= clock):
                release(clock)
            if scheduled and scheduled[0][0] <= clock:
                _, _, card, event = heappop(scheduled)
                if event.late:
                    late_pending[card] -= 1
                yield event
                continue
            while True:  # draw until something is emitted at this slot
                u = rand() * total
                if u < p_normal:  # _new_normal_event and _take_card, inlined
                    if available:
                        card = rested_card(clock)
                    elif cooling:  # unthrottled: no card has rested
                        card = cooling_popleft()[1]
                    else:
                        card = unrested()
                    cooling_append((clock + card_gap, card))
                    choices = city_merchants[card_city[card]]
                    merchant = choices[floor(rand() * len(choices))]
                    cents = merchant_amounts[merchant][getrandbits(AMOUNT_TABLE_BITS)]
                    event = make_event(card, merchant, cents, clock, None, None)
                    recent.append(event)
                    yield event
                    break
                if u >= p_pattern:
                    self._defer_as_late(clock)
                elif u < p_invalid:
                    yield self._new_invalid_event(clock)
                    break
                elif u < p_resend:
                    if recent:
                        yield with_changes(recent[getrandbits(16) % len(recent)], resent=True)
                        break
                else:
                    self._start_pattern(clock)

    def _new_normal_event(self, t: float) -> GeneratedEvent:
        card = self._take_card(t)
        choices = self._city_merchants[self._card_city[card]]
        merchant = choices[math.floor(self._rng.random() * len(choices))]
        cents = self._merchant_amounts[merchant][self._rng.getrandbits(AMOUNT_TABLE_BITS)]
        return self._event(card, merchant, cents, t, None, None)

    def _event_builder(
        self,
    ) -> Callable[[int, int, int, float, str | None, int | None], GeneratedEvent]:
        """``event(card, merchant, cents, t, fraud_kind, pattern_id)``: the wire bytes from
        precomputed fragments, the amount counted for the card.

        A closure rather than a method: every name it reads is a local cell, not an
        attribute of ``self``, which is a visible share of an event's cost.
        """
        card_sum, card_n = self._card_sum, self._card_n
        card_fragment, card_keys, card_ids = self._card_fragment, self._card_keys, self._card_ids
        merchant_head, merchant_tail = self._merchant_head, self._merchant_tail
        next_id = self._transaction_ids.__next__
        strftime, gmtime, floor = time.strftime, time.gmtime, math.floor
        second, second_text = -1, ""

        def event(
            card: int,
            merchant: int,
            cents: int,
            t: float,
            fraud_kind: str | None,
            pattern_id: int | None,
        ) -> GeneratedEvent:
            nonlocal second, second_text
            card_sum[card] += cents
            card_n[card] += 1
            txn_id = next_id()
            sec = floor(t)
            if sec != second:
                second = sec
                second_text = strftime("%Y-%m-%dT%H:%M:%S.", gmtime(sec))
            amount = AMOUNT_TEXT[cents] if cents < AMOUNT_TEXT_LEN else amount_text(cents)
            value = (
                f'{{"transaction_id":"{txn_id}{card_fragment[card]}'
                f"{merchant_head[merchant]}{amount}{merchant_tail[merchant]}"
                f"{second_text}{MILLIS_END[floor((t - sec) * 1000)]}"
            ).encode()
            return GeneratedEvent(
                card_keys[card], value, txn_id, card_ids[card], t, fraud_kind, pattern_id
            )

        return event

    # -- cards ------------------------------------------------------------------------

    def _take_card(self, t: float) -> int:
        """A random card that has rested for the card gap, favouring cities awake at ``t``.

        Cards rest in ``_cooling`` (a deque ordered by ready time, because every
        normal use adds the same gap) and come back to ``_available``. ``_events``
        inlines this for normal events.
        """
        card = self._rested_card(t) if self._available else self._unrested_card()
        self._cooling.append((t + self._card_gap, card))
        return card

    def _rested_card(self, t: float) -> int:
        available = self._available
        rand = self._rng.random
        floor = math.floor
        weights = self._hour_weights[floor(t // 3600) % 24]
        city_of = self._card_city
        for _ in range(_NIGHT_RETRIES):
            i = floor(rand() * len(available))
            if rand() < weights[city_of[available[i]]]:
                break
        card = available[i]
        available[i] = available[-1]
        available.pop()
        return card

    def _reserve_card(self) -> int:
        """A rested card for a fraud pattern; ``_hold_card`` says when it comes back.

        Prefers a card without late events in flight: one arriving after an
        impossible journey would look like a second one.
        """
        available = self._available
        if not available:
            return self._unrested_card()
        for _ in range(_NIGHT_RETRIES):
            i = int(self._rng.random() * len(available))
            if not self._late_pending[available[i]]:
                break
        card = available[i]
        available[i] = available[-1]
        available.pop()
        return card

    def _unrested_card(self) -> int:
        """No card has rested: more events per second than the cards carry at the card gap.

        Reuse the one that rested longest (velocity alerts on normal traffic may
        follow), or, with a tiny population, one still held by a fraud pattern.
        """
        if self._cooling:
            return self._cooling.popleft()[1]
        return heapq.heappop(self._reserved)[1]

    def _hold_card(self, card: int, until: float) -> None:
        heapq.heappush(self._reserved, (until, card))

    def _release_cards(self, t: float) -> None:
        cooling, reserved, available = self._cooling, self._reserved, self._available
        while cooling and cooling[0][0] <= t:
            available.append(cooling.popleft()[1])
        while reserved and reserved[0][0] <= t:
            available.append(heapq.heappop(reserved)[1])

    # -- noise: late, invalid ----------------------------------------------------------

    def _defer_as_late(self, t: float) -> None:
        """A normal event held back so it arrives 2-10 minutes after its event time."""
        event = self._new_normal_event(t)
        card = self._card_index[event.card_id]
        self._late_pending[card] += 1
        due = t + self._rng.uniform(120.0, 600.0)
        self._schedule(due, with_changes(event, late=True), card)

    def _new_invalid_event(self, t: float) -> GeneratedEvent:
        rng = self._rng
        base = self._new_normal_event(t)
        txn = msgspec.json.decode(base.value)
        kind = INVALID_KINDS[int(rng.random() * len(INVALID_KINDS))]
        value = corrupt(kind, txn, rng, t)
        return with_changes(base, value=value, invalid_reason=kind)

    # -- fraud patterns ----------------------------------------------------------------

    def _possible_kinds(self) -> tuple[str, ...]:
        # Impossible travel needs a second city far enough away.
        if len(self.population.cities) < 2:
            return (VELOCITY, AMOUNT_SPIKE, CARD_TESTING)
        return FRAUD_KINDS

    def _start_pattern(self, t: float) -> None:
        kind = self._kinds[int(self._rng.random() * len(self._kinds))]
        card = self._reserve_card()
        pattern = _Pattern(self, card, self._next_pattern)
        self._next_pattern += 1
        plan = {
            VELOCITY: self._plan_velocity,
            AMOUNT_SPIKE: self._plan_spike,
            IMPOSSIBLE_TRAVEL: self._plan_travel,
            CARD_TESTING: self._plan_card_testing,
        }[kind]
        hold_until = plan(pattern, t)
        for event in pattern.events:
            self._schedule(event.event_time, event, card)
        self._hold_card(card, hold_until)

    def _plan_velocity(self, pattern: _Pattern, t: float) -> float:
        """6-8 purchases (velocity count + 1..3) within half a velocity window, at one merchant.

        One merchant, because shops a few seconds apart would also look like
        impossible travel. Returns when the card may shop normally again: once
        normal use can no longer share a window with the burst.
        """
        cfg, rng = self.config, self._rng
        n = cfg.velocity_count + rng.randint(1, 3)
        step = 0.5 * cfg.velocity_window_s / (n - 1)
        merchant = self._home_merchant(pattern.card, channels=("pos", "online"))
        amounts = self._merchant_amounts[merchant]
        times = self._spaced_times(t, n, 0.3 * step, step)
        for at in times:
            pattern.add(merchant, rng.choice(amounts), at, VELOCITY)
        return times[-1] + cfg.velocity_window_s + self._card_gap

    def _plan_card_testing(self, pattern: _Pattern, t: float) -> float:
        """4-6 tiny online payments (0.50-1.99) within 5 minutes, at one online merchant.

        Spaced wider than the card gap so the series does not also trip velocity.
        Returns when the card may be used again: once a testing window has passed
        since the last payment, so a later series on the same card cannot share a
        window with this one (the flow would raise one alert for both).
        """
        cfg, rng = self.config, self._rng
        n = cfg.testing_count + rng.randint(1, 3)
        low_gap = 1.6 * self._card_gap
        high_gap = max(low_gap, 0.5 * cfg.testing_window_s / (n - 1))
        merchant = self._home_merchant(pattern.card, channels=("online",))
        top = max(51, min(200, math.ceil(cfg.testing_max_amount * 100)))
        times = self._spaced_times(t, n, low_gap, high_gap)
        for at in times:
            pattern.add(merchant, rng.randrange(50, top), at, CARD_TESTING)
        return times[-1] + max(cfg.testing_window_s, self._card_gap)

    def _plan_spike(self, pattern: _Pattern, t: float) -> float:
        """Two everyday purchases (10-80), then one of 2,000-9,000 in the home city.

        The setup purchases give the card a modest running mean even when the
        flow has not seen it before; the spike is also at least (factor + 1)
        times the card's mean so far.
        """
        cfg, rng, card = self.config, self._rng, pattern.card
        times = self._spaced_times(t, 3, 1.2 * self._card_gap, 4 * self._card_gap)
        for at in times[:2]:
            pattern.add(self._home_merchant(card, ("pos",)), rng.randrange(1000, 8000), at)
        mean = self._card_sum[card] / self._card_n[card]
        least = max(4 * cfg.spike_min_amount * 100, (cfg.spike_factor + 1) * mean)
        cents = round(max(least, rng.uniform(4, 18) * cfg.spike_min_amount * 100))
        merchant = self._home_merchant(card, ("pos", "online"), mcc_preference=("5732", "5311"))
        pattern.add(merchant, min(cents, 100_000_000), times[2], AMOUNT_SPIKE)
        return times[2] + self._card_gap

    def _plan_travel(self, pattern: _Pattern, t: float) -> float:
        """A purchase at home, then minutes later one in a city thousands of km away."""
        cfg, rng, pop = self.config, self._rng, self.population
        home_merchant = self._home_merchant(pattern.card, ("pos",))
        home_at = t + rng.uniform(0.5, 5.0)
        pattern.add(home_merchant, rng.choice(self._merchant_amounts[home_merchant]), home_at)
        far_city, distance = self._far_city(pop.card_city[pattern.card])
        # "Minutes" later, and at least twice as fast as the speed limit.
        dt = min(rng.uniform(120.0, 1200.0), 0.5 * distance / cfg.travel_kmh * 3600)
        candidates = pop.city_pos[far_city] or pop.city_merchants[far_city]
        far_merchant = candidates[int(rng.random() * len(candidates))]
        far_cents = rng.choice(self._merchant_amounts[far_merchant])
        pattern.add(far_merchant, far_cents, home_at + dt, IMPOSSIBLE_TRAVEL)
        # Back to normal use only once a real journey home would have been possible.
        return home_at + dt + 1.3 * distance / cfg.travel_kmh * 3600 + self._card_gap

    def _far_city(self, home: int) -> tuple[int, float]:
        pop = self.population
        here = pop.cities[home]
        distances = [
            (haversine_km(here.lat, here.lon, c.lat, c.lon), i) for i, c in enumerate(pop.cities)
        ]
        far = [(d, i) for d, i in distances if d >= _FAR_CITY_KM]
        d, i = self._rng.choice(far) if far else max(distances)
        return i, d

    def _home_merchant(
        self, card: int, channels: tuple[str, ...], mcc_preference: tuple[str, ...] = ()
    ) -> int:
        pop = self.population
        city = pop.card_city[card]
        pool = [
            m for m in set(pop.city_merchants[city]) if pop.merchants[m].channel in channels
        ] or list(set(pop.city_merchants[city]))
        pool.sort()
        preferred = [m for m in pool if pop.merchants[m].category.mcc in mcc_preference]
        return self._rng.choice(preferred or pool)

    def _spaced_times(self, t: float, n: int, low_gap: float, high_gap: float) -> list[float]:
        at = t + self._rng.uniform(0.5, 5.0)
        times = [at]
        for _ in range(n - 1):
            at += self._rng.uniform(low_gap, high_gap)
            times.append(at)
        return times

    def _schedule(self, due: float, event: GeneratedEvent, card: int) -> None:
        self._seq += 1
        heapq.heappush(self._scheduled, (due, self._seq, card, event))

    # -- precomputation ---------------------------------------------------------------

    def _prepare_fragments(self) -> None:
        """The JSON around the per-event parts, per card and per merchant, built once."""
        pop = self.population
        self._card_gap = self.config.card_gap_s
        self._card_city = pop.card_city
        self._card_ids = pop.card_ids
        self._city_merchants = pop.city_merchants
        self._card_keys = tuple(card_id.encode() for card_id in pop.card_ids)
        self._card_index = {card_id: i for i, card_id in enumerate(pop.card_ids)}
        self._card_fragment = tuple(f'","card_id":"{card_id}",' for card_id in pop.card_ids)
        self._merchant_head = tuple(
            f'"merchant_id":"{m.merchant_id}","mcc":"{m.category.mcc}","amount":'
            for m in pop.merchants
        )
        self._merchant_tail = tuple(
            f',"currency":"{pop.cities[m.city].currency}","country":"{pop.cities[m.city].country}",'
            f'"lat":{m.lat:.4f},"lon":{m.lon:.4f},"channel":"{m.channel}","event_time":"'
            for m in pop.merchants
        )
        self._merchant_amounts = tuple(pop.amounts[m.category.mcc] for m in pop.merchants)

    def _hourly_city_weights(self) -> tuple[tuple[float, ...], ...]:
        """For each UTC hour, each city's activity (0..1) at its local hour."""
        return tuple(
            tuple(
                HOURLY_ACTIVITY[int(utc_hour + city.utc_offset_h) % 24]
                for city in self.population.cities
            )
            for utc_hour in range(24)
        )


_ID_BLOCK_BITS: Final = 12
_ID_LOW_DIGITS: Final = tuple(f"{low:03x}" for low in range(1 << _ID_BLOCK_BITS))


def _transaction_ids(prefix: str) -> Iterator[str]:
    """``prefix`` + a hex serial (``000``, ``001``, ..., ``fff``, ``1000``, ...).

    Built by C iterators from precomputed low digits: formatting the serial in an
    f-string was about a tenth of an event's instructions (valgrind, bench/RESULTS.md).
    """

    def block(high: int) -> Iterator[str]:
        return map(f"{prefix}{high:x}".__add__ if high else prefix.__add__, _ID_LOW_DIGITS)

    return itertools.chain.from_iterable(map(block, itertools.count()))


class _Pattern:
    """The events of one injected fraud pattern, on one card, as they are planned."""

    def __init__(self, generator: PaymentsGenerator, card: int, pattern_id: int) -> None:
        self._generator = generator
        self.card = card
        self.pattern_id = pattern_id
        self.events: list[GeneratedEvent] = []

    def add(self, merchant: int, cents: int, at: float, fraud_kind: str | None = None) -> None:
        """A transaction of the pattern; fraud_kind None for an innocent-looking setup one."""
        event = self._generator._event(self.card, merchant, cents, at, fraud_kind, self.pattern_id)
        self.events.append(event)


@dataclass(frozen=True)
class _DrawTable:
    """Odds of each choice made at a free slot, in units of 'events per emitted event'.

    Fraud and late events are emitted from the schedule, not drawn, so their
    draws (a pattern start, a deferral) emit nothing and are sized so that the
    emitted shares come out as configured.
    """

    normal: float
    invalid: float
    resend: float
    pattern: float
    late: float

    @classmethod
    def for_config(cls, config: GeneratorConfig, kinds: tuple[str, ...]) -> _DrawTable:
        # Mean events per pattern kind, as the _plan_* methods make them.
        fraud_events = {
            VELOCITY: config.velocity_count + 2.0,
            CARD_TESTING: config.testing_count + 2.0,
            IMPOSSIBLE_TRAVEL: 1.0,
            AMOUNT_SPIKE: 1.0,
        }
        setup_events = {IMPOSSIBLE_TRAVEL: 1.0, AMOUNT_SPIKE: 2.0}
        fraud_per_pattern = sum(fraud_events[k] for k in kinds) / len(kinds)
        setup_per_pattern = sum(setup_events.get(k, 0.0) for k in kinds) / len(kinds)
        patterns = config.fraud_share / fraud_per_pattern
        setup = patterns * setup_per_pattern
        normal = (
            1.0
            - config.fraud_share
            - setup
            - config.late_share
            - config.invalid_share
            - config.duplicate_share
        )
        return cls(
            normal=max(0.0, normal),
            invalid=config.invalid_share,
            resend=config.duplicate_share,
            pattern=patterns,
            late=config.late_share,
        )
