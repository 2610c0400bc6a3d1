"""Per-card state and the four fraud rules, in event time.

All of a card's transactions are in one Kafka partition (the key is card_id),
so one partition processor sees them in one deterministic order: the same
input gives the same alerts, in a live run and in a replay.

Rules (thresholds from the settings, via :class:`~flows.payments.config.FlowConfig`):

* ``velocity``: >= N transactions of a card less than the velocity window apart
  (event time), counted when a transaction arrives, in any such span holding it
  (so an out-of-order arrival can complete a burst).
* ``amount_spike``: amount > the minimum and > factor x the card's running mean
  of its previous amounts (needs at least one previous amount).
* ``impossible_travel``: the card's previous transaction (arrival order) is so
  far away that getting there in the time between them needs more than the
  speed limit. Places closer than ``travel_min_km`` count as the same place.
* ``card_testing``: >= N amounts below the testing maximum within the testing
  window (counted like velocity).
* ``profile_amount``: an amount above the card's profiled mean + k standard
  deviations, m x that mean and the spike minimum, where the profile is the card's
  latest from the batch layer (``payments.card_profiles``, computed over weeks of the
  lake) as of the transaction's place in the stream. A card without a profile (new, or too few
  transactions for one) is not judged by this rule.

Alert storms: velocity and card testing fire once when the count reaches the
threshold, then stay quiet for that card until a transaction at or after
``alert time + window`` (the window that triggered has passed); then they
re-arm and count afresh. A burst of 8 inside one window gives one alert.
Spike and travel are about one transaction each: at most one alert per
transaction and rule.
"""

from __future__ import annotations

import hashlib
import json
import math
from bisect import bisect_left, bisect_right, insort

import msgspec

from flows.payments.config import FlowConfig

VELOCITY = "velocity"
AMOUNT_SPIKE = "amount_spike"
IMPOSSIBLE_TRAVEL = "impossible_travel"
CARD_TESTING = "card_testing"
PROFILE_AMOUNT = "profile_amount"
# The rules that need nothing but the stream, and all of them.
STREAM_RULES = (VELOCITY, AMOUNT_SPIKE, IMPOSSIBLE_TRAVEL, CARD_TESTING)
RULES = (*STREAM_RULES, PROFILE_AMOUNT)

EARTH_RADIUS_KM = 6371.0
_US_PER_HOUR = 3_600_000_000


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def alert_id(rule: str, transaction_id: str) -> str:
    """Deterministic, so a replay produces the same id and sinks can drop the repeat."""
    return hashlib.sha1(f"{rule}|{transaction_id}".encode()).hexdigest()[:16]


_NEVER = -(1 << 62)


class CardState(msgspec.Struct, array_like=True, gc=False):
    """What the processor remembers about one card.

    A msgspec Struct: tens of thousands of these are snapshotted every few
    seconds, and msgpack encodes them many times faster than pickle.
    """

    # transaction_id -> event time, oldest first (dicts keep insertion order)
    ids: dict[str, int] = msgspec.field(default_factory=dict)
    last_us: int = _NEVER  # latest event time seen for the card
    velocity_times: list[int] = msgspec.field(default_factory=list)  # sorted
    velocity_quiet_until: int = _NEVER
    mean_n: int = 0
    mean_sum: int = 0  # cents
    prev: tuple[int, float, float, str] | None = None  # (us, lat, lon, transaction id)
    small_times: list[int] = msgspec.field(default_factory=list)  # sorted
    testing_quiet_until: int = _NEVER

    def seen(self, transaction_id: str, event_us: int, config: FlowConfig) -> bool:
        """True if this transaction id was already seen (a resend); else remember it."""
        ids = self.ids
        if transaction_id in ids:
            return True
        ids[transaction_id] = event_us
        # Oldest first (arrival order): drop by count, then what the TTL says is too old.
        if len(ids) > config.resend_max_per_card:
            del ids[next(iter(ids))]
        # Conditional expressions, not max(): in Python 3.11 max() takes the slow,
        # generic call path, a visible cost at one call per event.
        newest = event_us if event_us > self.last_us else self.last_us
        horizon = newest - config.resend_ttl_us
        while True:
            oldest = next(iter(ids))
            if ids[oldest] >= horizon or oldest == transaction_id:
                break
            del ids[oldest]
        return False


class Profile(msgspec.Struct, array_like=True, gc=False):
    """What the rules use of a card's profile (riverbed.contracts.payments.CardProfile)."""

    since_ms: int  # the profile message's Kafka timestamp: it applies from there on
    txn_count: int
    mean_cents: float
    std_cents: float | None


class FraudRules:
    """Applies the rules to one transaction of one card, updating the card's state."""

    def __init__(self, config: FlowConfig) -> None:
        self.config = config

    def check(
        self,
        card: CardState,
        transaction_id: str,
        event_us: int,
        cents: int,
        lat: float,
        lon: float,
        profile: Profile | None = None,
    ) -> list[tuple[str, float, str]]:
        """The rules hit, as (rule, score, details JSON); updates the card's state."""
        cfg = self.config
        hits: list[tuple[str, float, str]] = []

        # velocity
        count = _count_in_window(card.velocity_times, event_us, cfg.velocity_window_us)
        if count >= cfg.velocity_count and event_us >= card.velocity_quiet_until:
            card.velocity_quiet_until = event_us + cfg.velocity_window_us
            hits.append(
                (
                    VELOCITY,
                    round(count / cfg.velocity_count, 4),
                    _details(count=count, window_s=cfg.velocity_window_us / 1e6),
                )
            )

        # amount spike, against the mean of the previous amounts
        if card.mean_n and cents > cfg.spike_min_cents:
            mean = card.mean_sum / card.mean_n
            if cents > cfg.spike_factor * mean:
                hits.append(
                    (
                        AMOUNT_SPIKE,
                        round(cents / (cfg.spike_factor * mean), 4),
                        _details(
                            amount=cents / 100,
                            mean=round(mean / 100, 2),
                            previous=card.mean_n,
                            factor=cfg.spike_factor,
                        ),
                    )
                )
        card.mean_n += 1
        card.mean_sum += cents

        # impossible travel, against the previous transaction
        prev = card.prev
        if prev is not None:
            gap_us = abs(event_us - prev[0])
            hours = (gap_us if gap_us > 1_000_000 else 1_000_000) / _US_PER_HOUR  # not max()
            # An upper bound of the great-circle distance (a degree is at most 111.2 km):
            # most pairs are clearly possible and skip the trigonometry.
            bound = 111.2 * (abs(lat - prev[1]) + abs(lon - prev[2]))
            if bound >= cfg.travel_min_km and bound / hours > cfg.travel_kmh:
                km = haversine_km(prev[1], prev[2], lat, lon)
                kmh = km / hours
                if km >= cfg.travel_min_km and kmh > cfg.travel_kmh:
                    hits.append(
                        (
                            IMPOSSIBLE_TRAVEL,
                            round(kmh / cfg.travel_kmh, 4),
                            _details(
                                km=round(km, 1),
                                seconds=round(abs(event_us - prev[0]) / 1e6, 3),
                                kmh=round(kmh, 1),
                                previous_transaction_id=prev[3],
                            ),
                        )
                    )
        card.prev = (event_us, lat, lon, transaction_id)

        # card testing
        if cents < cfg.testing_max_cents:
            n = _count_in_window(card.small_times, event_us, cfg.testing_window_us)
            if n >= cfg.testing_count and event_us >= card.testing_quiet_until:
                card.testing_quiet_until = event_us + cfg.testing_window_us
                hits.append(
                    (
                        CARD_TESTING,
                        round(n / cfg.testing_count, 4),
                        _details(
                            count=n,
                            max_amount=cfg.testing_max_cents / 100,
                            window_s=cfg.testing_window_us / 1e6,
                        ),
                    )
                )

        # amount far above the card's own profile
        if (
            profile is not None
            and profile.std_cents is not None
            and profile.txn_count >= cfg.profile_min_txns
        ):
            limit = max(
                profile.mean_cents + cfg.profile_sigmas * profile.std_cents,
                cfg.profile_min_factor * profile.mean_cents,
                cfg.spike_min_cents,  # an amount worth an alert at all, as for spikes
            )
            if cents > limit:
                hits.append(
                    (
                        PROFILE_AMOUNT,
                        round(cents / limit, 4),
                        _details(
                            amount=cents / 100,
                            profile_mean=round(profile.mean_cents / 100, 2),
                            profile_std=round(profile.std_cents / 100, 2),
                            profile_txns=profile.txn_count,
                        ),
                    )
                )

        if event_us > card.last_us:
            card.last_us = event_us
        return hits


def _count_in_window(times: list[int], t: int, width: int) -> int:
    """Add ``t`` to the sorted ``times``, forget those that can never count again (a
    window or more before the newest), and give :func:`_busiest_window` for ``t``."""
    if not times or t >= times[-1]:
        # In order, as nearly every event is: everything kept is less than a window
        # before t, so the busiest span holding t is all of them.
        times.append(t)
        if times[0] <= t - width:
            del times[: bisect_right(times, t - width)]
        return len(times)
    insort(times, t)
    newest = times[-1]
    if times[0] <= newest - width:
        del times[: bisect_right(times, newest - width)]
    return _busiest_window(times, t, width)


def _busiest_window(times: list[int], t: int, width: int) -> int:
    """The most events (sorted ``times``) in any span shorter than ``width`` that holds ``t``.

    For events arriving in time order that is the span ending at ``t``; a late
    arrival can also complete a span with events that arrived before it.
    """
    first = bisect_right(times, t - width)
    last = bisect_right(times, t)
    best = 0
    for j in range(first, last):
        best = max(best, bisect_left(times, times[j] + width) - j)
    return best


def _details(**fields: object) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


_cards_encoder = msgspec.msgpack.Encoder()
_cards_decoder = msgspec.msgpack.Decoder(dict[str, CardState])
_profiles_decoder = msgspec.msgpack.Decoder(dict[str, Profile])


def encode_profiles(profiles: dict[str, Profile]) -> bytes:
    return _cards_encoder.encode(profiles)


def decode_profiles(blob: bytes) -> dict[str, Profile]:
    return _profiles_decoder.decode(blob)


def encode_cards(cards: dict[str, CardState]) -> bytes:
    return _cards_encoder.encode(cards)


def decode_cards(blob: bytes) -> dict[str, CardState]:
    return _cards_decoder.decode(blob)
