"""The generator's settings and the population it simulates: cards and merchants."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final

from producers.payments.reference import (
    ATM_MCC,
    CATEGORIES,
    CITIES,
    GROCERY_MCC,
    ONLINE_MCC,
    City,
    MerchantCategory,
)
from riverbed.settings import Settings


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
