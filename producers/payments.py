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

import contextlib
import heapq
import logging
import math
import os
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Final

import msgspec
from msgspec.structs import replace as with_changes
from prometheus_client import CollectorRegistry

from producers.kafka_loop import (
    ProduceSummary,
    ProgressCallback,
    SendCounts,
    produce,
    producer_config,
)
from producers.metrics import ProducerCollector
from riverbed import prometheus
from riverbed.settings import Settings
from riverbed.topics import PAYMENTS_TRANSACTIONS

log = logging.getLogger("riverbed.producer")

VELOCITY: Final = "velocity"
AMOUNT_SPIKE: Final = "amount_spike"
IMPOSSIBLE_TRAVEL: Final = "impossible_travel"
CARD_TESTING: Final = "card_testing"
FRAUD_KINDS: Final = (VELOCITY, AMOUNT_SPIKE, IMPOSSIBLE_TRAVEL, CARD_TESTING)


class GeneratedEvent(msgspec.Struct, frozen=True, gc=False):
    """One message to publish and its ground truth.

    ``key``/``value`` are the bytes on the wire; the rest is the label and is
    never published. ``fraud_kind`` is set on the transactions a rule should
    flag; ``pattern_id`` groups every event of one injected pattern, including
    the innocent-looking setup transactions (fraud_kind None) that precede a
    spike or an impossible journey. A msgspec Struct rather than a dataclass
    because one is built per event and Struct creation is several times cheaper.
    """

    key: bytes
    value: bytes
    transaction_id: str
    card_id: str
    event_time: float  # seconds since the epoch, UTC
    fraud_kind: str | None = None
    pattern_id: int | None = None
    late: bool = False
    resent: bool = False
    invalid_reason: str | None = None

    @property
    def valid(self) -> bool:
        return self.invalid_reason is None


# --- reference data ----------------------------------------------------------------------


@dataclass(frozen=True)
class City:
    name: str
    country: str  # ISO 3166 alpha-2
    currency: str  # ISO 4217
    lat: float
    lon: float
    utc_offset_h: float  # standard time; daylight saving is ignored
    weight: float  # share of cards whose home this is


CITIES: Final[tuple[City, ...]] = (
    City("New York", "US", "USD", 40.7128, -74.0060, -5, 4),
    City("Los Angeles", "US", "USD", 34.0522, -118.2437, -8, 3),
    City("Chicago", "US", "USD", 41.8781, -87.6298, -6, 2),
    City("Toronto", "CA", "CAD", 43.6532, -79.3832, -5, 2),
    City("Mexico City", "MX", "MXN", 19.4326, -99.1332, -6, 2),
    City("Sao Paulo", "BR", "BRL", -23.5505, -46.6333, -3, 3),
    City("Buenos Aires", "AR", "ARS", -34.6037, -58.3816, -3, 1.5),
    City("Bogota", "CO", "COP", 4.7110, -74.0721, -5, 1),
    City("Lima", "PE", "PEN", -12.0464, -77.0428, -5, 1),
    City("Santiago", "CL", "CLP", -33.4489, -70.6693, -4, 1),
    City("London", "GB", "GBP", 51.5074, -0.1278, 0, 4),
    City("Paris", "FR", "EUR", 48.8566, 2.3522, 1, 3),
    City("Berlin", "DE", "EUR", 52.5200, 13.4050, 1, 2.5),
    City("Madrid", "ES", "EUR", 40.4168, -3.7038, 1, 2),
    City("Rome", "IT", "EUR", 41.9028, 12.4964, 1, 2),
    City("Amsterdam", "NL", "EUR", 52.3676, 4.9041, 1, 1.5),
    City("Stockholm", "SE", "SEK", 59.3293, 18.0686, 1, 1),
    City("Warsaw", "PL", "PLN", 52.2297, 21.0122, 1, 1),
    City("Zurich", "CH", "CHF", 47.3769, 8.5417, 1, 1),
    City("Dublin", "IE", "EUR", 53.3498, -6.2603, 0, 1),
    City("Lisbon", "PT", "EUR", 38.7223, -9.1393, 0, 1),
    City("Istanbul", "TR", "TRY", 41.0082, 28.9784, 3, 2),
    City("Cairo", "EG", "EGP", 30.0444, 31.2357, 2, 1.5),
    City("Lagos", "NG", "NGN", 6.5244, 3.3792, 1, 1.5),
    City("Nairobi", "KE", "KES", -1.2921, 36.8219, 3, 1),
    City("Johannesburg", "ZA", "ZAR", -26.2041, 28.0473, 2, 1),
    City("Dubai", "AE", "AED", 25.2048, 55.2708, 4, 1.5),
    City("Mumbai", "IN", "INR", 19.0760, 72.8777, 5.5, 3),
    City("Delhi", "IN", "INR", 28.7041, 77.1025, 5.5, 3),
    City("Singapore", "SG", "SGD", 1.3521, 103.8198, 8, 1.5),
    City("Bangkok", "TH", "THB", 13.7563, 100.5018, 7, 1.5),
    City("Jakarta", "ID", "IDR", -6.2088, 106.8456, 7, 2),
    City("Hong Kong", "HK", "HKD", 22.3193, 114.1694, 8, 1.5),
    City("Shanghai", "CN", "CNY", 31.2304, 121.4737, 8, 3),
    City("Seoul", "KR", "KRW", 37.5665, 126.9780, 9, 2),
    City("Tokyo", "JP", "JPY", 35.6762, 139.6503, 9, 3),
    City("Manila", "PH", "PHP", 14.5995, 120.9842, 8, 1.5),
    City("Sydney", "AU", "AUD", -33.8688, 151.2093, 10, 1.5),
    City("Melbourne", "AU", "AUD", -37.8136, 144.9631, 10, 1),
    City("Auckland", "NZ", "NZD", -36.8485, 174.7633, 12, 0.5),
)


@dataclass(frozen=True)
class MerchantCategory:
    mcc: str
    description: str
    weight: float  # how often a card shops in this category
    median: float  # lognormal amount: exp(mu) in major units
    sigma: float
    online_share: float  # share of merchants of this category that sell online


ATM_MCC: Final = "6011"
ONLINE_MCC: Final = "5999"
GROCERY_MCC: Final = "5411"

CATEGORIES: Final[tuple[MerchantCategory, ...]] = (
    MerchantCategory(GROCERY_MCC, "grocery stores, supermarkets", 22, 35, 0.7, 0.05),
    MerchantCategory("5812", "restaurants", 14, 28, 0.6, 0.0),
    MerchantCategory("5814", "fast food", 10, 11, 0.5, 0.1),
    MerchantCategory("5541", "fuel stations", 9, 45, 0.4, 0.0),
    MerchantCategory("4111", "local transit", 8, 4.5, 0.45, 0.2),
    MerchantCategory("5912", "pharmacies", 5, 20, 0.6, 0.1),
    MerchantCategory(ONLINE_MCC, "miscellaneous retail", 8, 30, 0.9, 1.0),
    MerchantCategory("5311", "department stores", 6, 60, 0.8, 0.2),
    MerchantCategory("5691", "clothing stores", 4, 55, 0.7, 0.3),
    MerchantCategory("5732", "electronics stores", 3, 120, 0.8, 0.4),
    MerchantCategory("7011", "hotels, lodging", 2, 160, 0.5, 0.5),
    MerchantCategory("4511", "airlines", 1, 250, 0.4, 0.8),
    MerchantCategory(ATM_MCC, "ATM cash withdrawal", 6, 0, 0, 0.0),
)

# Share of the daily peak that a city spends at each local hour: quiet nights,
# a morning rise, busy afternoons. The rhythm shifts traffic between time zones;
# the global rate stays what the caller asked for.
HOURLY_ACTIVITY: Final[tuple[float, ...]] = (
    0.15, 0.10, 0.07, 0.06, 0.07, 0.12, 0.25, 0.45, 0.65, 0.80, 0.90, 0.95,
    1.00, 1.00, 0.95, 0.92, 0.95, 1.00, 0.98, 0.90, 0.75, 0.55, 0.38, 0.25,
)  # fmt: skip

EARTH_RADIUS_KM: Final = 6371.0


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance; the flow's impossible-travel rule uses the same formula."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


# --- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorConfig:
    """What the generator needs from the settings: population, shares, rule thresholds."""

    cards: int = 5000
    merchants: int = 500
    fraud_share: float = 0.02
    late_share: float = 0.01
    duplicate_share: float = 0.01
    invalid_share: float = 0.005
    velocity_count: int = 5
    velocity_window_s: float = 60.0
    spike_min_amount: float = 500.0
    spike_factor: float = 5.0
    travel_kmh: float = 900.0
    testing_count: int = 3
    testing_max_amount: float = 2.0
    testing_window_s: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> GeneratorConfig:
        return cls(
            cards=settings.producer_cards,
            merchants=settings.producer_merchants,
            fraud_share=settings.producer_fraud_share,
            late_share=settings.producer_late_share,
            duplicate_share=settings.producer_duplicate_share,
            invalid_share=settings.producer_invalid_share,
            velocity_count=settings.fraud_velocity_count,
            velocity_window_s=settings.fraud_velocity_window_s,
            spike_min_amount=settings.fraud_spike_min_amount,
            spike_factor=settings.fraud_spike_factor,
            travel_kmh=settings.fraud_travel_kmh,
            testing_count=settings.fraud_testing_count,
            testing_max_amount=settings.fraud_testing_max_amount,
            testing_window_s=settings.fraud_testing_window_s,
        )

    @property
    def card_gap_s(self) -> float:
        """Least event time between two normal transactions of a card.

        ``velocity_count`` transactions then span at least 1.25 velocity windows.
        """
        return 1.25 * self.velocity_window_s / (self.velocity_count - 1)

    @property
    def max_normal_cents(self) -> int:
        return min(49_999, math.ceil(self.spike_min_amount * 100) - 1)

    @property
    def min_normal_cents(self) -> int:
        return max(200, math.ceil(self.testing_max_amount * 100))

    @property
    def merchant_jitter_deg(self) -> float:
        """How far (in degrees) a merchant sits from its city centre.

        Two merchants of one city are then at most half the distance the travel
        limit allows in one card gap: normal spending never looks like travel.
        """
        max_km = 0.5 * self.travel_kmh * self.card_gap_s / 3600
        return min(0.02, max_km / (2 * 111.2 * math.sqrt(2)))

    @property
    def max_sustainable_rate(self) -> float:
        """Events/s above which cards must be reused within the card gap."""
        return self.cards / self.card_gap_s


# --- population ------------------------------------------------------------------------

AMOUNT_TABLE_BITS: Final = 12  # 4096 precomputed amounts per category


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    category: MerchantCategory
    city: int  # index into CITIES
    channel: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Population:
    """Cards and merchants, built once from the seed; everything per event is a lookup."""

    cities: tuple[City, ...]
    merchants: tuple[Merchant, ...]
    card_ids: tuple[str, ...]
    card_city: tuple[int, ...]
    city_merchants: tuple[tuple[int, ...], ...]  # per city: merchant indices, repeated by weight
    city_online: tuple[tuple[int, ...], ...]
    city_pos: tuple[tuple[int, ...], ...]
    amounts: dict[str, tuple[int, ...]]  # per mcc: amounts in cents, 2**AMOUNT_TABLE_BITS


def build_population(rng: random.Random, config: GeneratorConfig) -> Population:
    cities = _active_cities(config.merchants)
    merchants = _build_merchants(rng, cities, config)
    city_weights = [c.weight for c in cities]
    card_city = tuple(rng.choices(range(len(cities)), weights=city_weights, k=config.cards))
    width = len(str(config.cards - 1))
    card_ids = tuple(f"card-{i:0{width}d}" for i in range(config.cards))
    by_city: list[list[int]] = [[] for _ in cities]
    for idx, merchant in enumerate(merchants):
        by_city[merchant.city].append(idx)
    city_merchants = tuple(
        tuple(i for i in idxs for _ in range(max(1, round(merchants[i].category.weight))))
        for idxs in by_city
    )
    city_online = tuple(
        tuple(i for i in idxs if merchants[i].channel == "online") for idxs in by_city
    )
    city_pos = tuple(tuple(i for i in idxs if merchants[i].channel == "pos") for idxs in by_city)
    amounts = {cat.mcc: _amount_table(rng, cat, config) for cat in CATEGORIES}
    return Population(
        cities=cities,
        merchants=merchants,
        card_ids=card_ids,
        card_city=card_city,
        city_merchants=city_merchants,
        city_online=city_online,
        city_pos=city_pos,
        amounts=amounts,
    )


# Every city gets these first, so each home city can host every normal and fraud
# pattern (online merchants for card testing, an ATM, a shop).
_CITY_BASICS: Final = (ONLINE_MCC, GROCERY_MCC, ATM_MCC)


def _active_cities(merchants: int) -> tuple[City, ...]:
    """The cities that get merchants: all of them unless there are too few merchants."""
    return CITIES[: max(1, min(len(CITIES), merchants // len(_CITY_BASICS)))]


def _build_merchants(
    rng: random.Random, cities: tuple[City, ...], config: GeneratorConfig
) -> tuple[Merchant, ...]:
    by_mcc = {cat.mcc: cat for cat in CATEGORIES}
    placements: list[tuple[MerchantCategory, int]] = []
    for city_idx in range(len(cities)):
        placements.extend((by_mcc[mcc], city_idx) for mcc in _CITY_BASICS)
    placements = placements[: config.merchants]
    city_weights = [c.weight for c in cities]
    cat_weights = [c.weight for c in CATEGORIES]
    while len(placements) < config.merchants:
        city_idx = rng.choices(range(len(cities)), weights=city_weights)[0]
        placements.append((rng.choices(CATEGORIES, weights=cat_weights)[0], city_idx))
    jitter = config.merchant_jitter_deg
    merchants = []
    width = len(str(config.merchants - 1))
    for i, (cat, city_idx) in enumerate(placements):
        city = cities[city_idx]
        merchants.append(
            Merchant(
                merchant_id=f"merch-{i:0{width}d}",
                category=cat,
                city=city_idx,
                channel=_channel_for(rng, cat),
                lat=round(city.lat + rng.uniform(-jitter, jitter), 4),
                lon=round(city.lon + rng.uniform(-jitter, jitter), 4),
            )
        )
    return tuple(merchants)


def _channel_for(rng: random.Random, cat: MerchantCategory) -> str:
    if cat.mcc == ATM_MCC:
        return "atm"
    return "online" if rng.random() < cat.online_share else "pos"


def _amount_table(
    rng: random.Random, cat: MerchantCategory, config: GeneratorConfig
) -> tuple[int, ...]:
    """Amounts in cents for normal spending in one category, within the normal bounds.

    Drawn once, so a normal event pays one table lookup instead of a lognormal
    draw and a rejection loop.
    """
    low, high = config.min_normal_cents, config.max_normal_cents
    size = 1 << AMOUNT_TABLE_BITS
    if cat.mcc == ATM_MCC:
        # Cash comes in notes: 20 to 400 in steps of 20 (or the normal bounds).
        notes = [c for c in range(2000, 40001, 2000) if low <= c <= high] or [low]
        return tuple(rng.choice(notes) for _ in range(size))
    mu = math.log(cat.median)
    table: list[int] = []
    while len(table) < size:
        cents = round(rng.lognormvariate(mu, cat.sigma) * 100)
        if low <= cents <= high:
            table.append(cents)
    return tuple(table)


# --- invalid messages --------------------------------------------------------------------

INVALID_KINDS: Final = (
    "broken_json",
    "missing_field",
    "wrong_type",
    "bad_currency",
    "negative_amount",
    "zero_amount",
    "three_decimals",
    "bad_mcc",
    "bad_country",
    "bad_channel",
    "lat_out_of_range",
    "empty_card_id",
    "naive_event_time",
    "future_event_time",
    "not_an_object",
)


def _corrupt(kind: str, fields: dict[str, object], rng: random.Random, clock: float) -> bytes:
    """The payload of a valid transaction broken in one way the contract rejects."""
    broken = dict(fields)
    if kind == "broken_json":
        good = msgspec.json.encode(broken)
        return good[: rng.randrange(1, len(good) - 1)]
    if kind == "not_an_object":
        return msgspec.json.encode([broken["transaction_id"], broken["amount"]])
    if kind == "missing_field":
        del broken[rng.choice(sorted(broken))]
    elif kind == "wrong_type":
        broken["amount"] = str(broken["amount"])
    elif kind == "bad_currency":
        broken["currency"] = rng.choice(("EURO", "usd", "XYZ", "$"))
    elif kind == "negative_amount":
        broken["amount"] = -abs(float(broken["amount"]))  # type: ignore[arg-type]
    elif kind == "zero_amount":
        broken["amount"] = 0
    elif kind == "three_decimals":
        broken["amount"] = (rng.randrange(200, 50_000) * 10 + rng.randrange(1, 10)) / 1000
    elif kind == "bad_mcc":
        broken["mcc"] = rng.choice(("541", "54A1", "05411", ""))
    elif kind == "bad_country":
        broken["country"] = rng.choice(("ZZ", "USA", "fr"))
    elif kind == "bad_channel":
        broken["channel"] = rng.choice(("kiosk", "POS", "phone"))
    elif kind == "lat_out_of_range":
        broken["lat"] = rng.choice((-1, 1)) * rng.uniform(90.5, 180)
    elif kind == "empty_card_id":
        broken["card_id"] = ""
    elif kind == "naive_event_time":
        broken["event_time"] = str(broken["event_time"]).rstrip("Z")
    elif kind == "future_event_time":
        broken["event_time"] = format_event_time(clock + rng.uniform(3600, 86_400))
    else:  # pragma: no cover - INVALID_KINDS and this function move together
        raise ValueError(f"unknown invalid kind {kind!r}")
    return msgspec.json.encode(broken)


def _amount_text(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


# Formatting numbers is a visible share of an event's cost: look the common ones up.
_AMOUNT_TEXT_LEN: Final = 50_000  # every normal amount (< 500.00)
_AMOUNT_TEXT: Final = tuple(_amount_text(c) for c in range(_AMOUNT_TEXT_LEN))
_MILLIS_END: Final = tuple(
    f'{ms:03d}Z"}}' for ms in range(1000)
)  # closes event_time and the object


def format_event_time(t: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-01-31T12:00:00.123Z``."""
    sec = math.floor(t)
    ms = min(999, int((t - sec) * 1000))
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(sec))}.{ms:03d}Z"


# --- the generator -----------------------------------------------------------------------

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
        self._next_txn = 0
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
        self._second = -1
        self._second_text = ""

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
        log = math.log
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
        new_normal = self._new_normal_event
        recent = self._recent
        release = self._release_cards
        cooling, reserved = self._cooling, self._reserved
        late_pending = self._late_pending
        clock = self._clock
        while True:
            clock -= log(1.0 - rand()) / rate  # random.expovariate(rate), without the call
            if wall is not None:
                now = wall()
                if clock > now or clock < now - _MAX_WALL_LAG_S:
                    clock = max(now, self._clock)
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
                if u < p_normal:
                    event = new_normal(clock)
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
        merchant = choices[int(self._rng.random() * len(choices))]
        cents = self._merchant_amounts[merchant][self._rng.getrandbits(AMOUNT_TABLE_BITS)]
        return self._event(card, merchant, cents, t, None, None)

    def _event(
        self,
        card: int,
        merchant: int,
        cents: int,
        t: float,
        fraud_kind: str | None,
        pattern_id: int | None,
    ) -> GeneratedEvent:
        """Build the wire bytes from precomputed fragments; count the amount for the card."""
        self._card_sum[card] += cents
        self._card_n[card] += 1
        txn_id = f"{self._id_prefix}{self._next_txn:x}"
        self._next_txn += 1
        sec = int(t)
        if sec != self._second:
            self._second = sec
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))
        amount = _AMOUNT_TEXT[cents] if cents < _AMOUNT_TEXT_LEN else _amount_text(cents)
        value = (
            f'{{"transaction_id":"{txn_id}{self._card_fragment[card]}'
            f"{self._merchant_head[merchant]}{amount}{self._merchant_tail[merchant]}"
            f"{self._second_text}{_MILLIS_END[int((t - sec) * 1000)]}"
        ).encode()
        return GeneratedEvent(
            self._card_keys[card],
            value,
            txn_id,
            self._card_ids[card],
            t,
            fraud_kind,
            pattern_id,
        )

    # -- cards ------------------------------------------------------------------------

    def _take_card(self, t: float) -> int:
        """A random card that has rested for the card gap, favouring cities awake at ``t``.

        Cards rest in ``_cooling`` (a deque ordered by ready time, because every
        normal use adds the same gap) and come back to ``_available``.
        """
        available = self._available
        rand = self._rng.random
        if available:
            weights = self._hour_weights[int(t // 3600) % 24]
            city_of = self._card_city
            for _ in range(_NIGHT_RETRIES):
                i = int(rand() * len(available))
                if rand() < weights[city_of[available[i]]]:
                    break
            card = available[i]
            available[i] = available[-1]
            available.pop()
        else:
            card = self._unrested_card()
        self._cooling.append((t + self._card_gap, card))
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
        value = _corrupt(kind, txn, rng, t)
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


# --- the CLI entry point ----------------------------------------------------------------


def produce_payments(
    settings: Settings,
    *,
    rate: float | None,
    count: int | None,
    duration: float | None,
    seed: int | None,
    topic: str = PAYMENTS_TRANSACTIONS,
    progress: ProgressCallback | None = None,
    producer_overrides: dict[str, str] | None = None,
    serve_metrics: bool = False,
) -> ProduceSummary:
    """Generate payments and publish them to Kafka until ``count`` or ``duration``.

    ``serve_metrics``: serve :mod:`producers.metrics` to Prometheus while it runs
    (``riverbed produce`` does).

    ``rate`` None takes ``settings.producer_rate``; 0 means as fast as possible.
    ``seed`` None draws one; it is in the summary so a run can be reproduced.
    """
    if seed is None:
        seed = secrets.randbits(32)
    events_per_s = settings.producer_rate if rate is None else rate
    config = GeneratorConfig.from_settings(settings)
    # Unthrottled, event time simply follows the wall clock; the nominal rate
    # only spaces events between two reads of it.
    nominal = events_per_s if events_per_s > 0 else settings.producer_rate
    _warn_if_cards_cannot_rest(config, events_per_s)
    generator = PaymentsGenerator(
        config, seed=seed, start=time.time(), rate=nominal, wall_clock=time.time
    )
    log.info("producing payments to %s with seed %d", topic, seed)
    counts = SendCounts()
    with contextlib.ExitStack() as serving:
        if serve_metrics:
            registry = CollectorRegistry()
            registry.register(ProducerCollector(counts, topic, events_per_s))
            name = f"payments-{os.getpid()}"
            serving.enter_context(prometheus.serving(settings, "producer", name, registry))
        summary = produce(
            generator.pairs(),
            topic=topic,
            config=producer_config(settings, producer_overrides),
            rate=events_per_s if events_per_s > 0 else None,
            count=count,
            duration=duration,
            progress=progress,
            counts=counts,
        )
    return replace(summary, seed=seed)


def _warn_if_cards_cannot_rest(config: GeneratorConfig, events_per_s: float) -> None:
    """Say so when normal traffic will trip velocity alerts: too few cards for the rate."""
    limit = config.max_sustainable_rate
    advice = (
        "%s: above %.0f events/s, %d cards cannot rest %.1f s between uses and normal "
        "traffic trips velocity alerts (raise RIVERBED_PRODUCER_CARDS)"
    )
    if events_per_s <= 0:
        log.info(advice, "unthrottled", limit, config.cards, config.card_gap_s)
    elif events_per_s > limit:
        log.warning(advice, f"{events_per_s:.0f} events/s", limit, config.cards, config.card_gap_s)
