"""The faults the generator injects: how far a spike goes, how a drift grows, how
long a flat line, a dropout or a skewed clock lasts.

Two kinds of spike, for the flow's two rules: one outside what a room can plausibly
read (:data:`PLAUSIBLE`) but inside what the sensor can report (the contract's
``RANGES``, so the message is valid), and one inside the plausible range but far
from what the device usually reads (:data:`SPIKE_MIN_DEVIATION` from the value it
would have read). Normal readings stay well inside :data:`PLAUSIBLE`.
"""

from __future__ import annotations

import random
from typing import Final

from producers.iot.events import CLOCK_SKEW, DRIFT, DROPOUT, FLATLINE, SPIKE_RANGE
from riverbed.contracts.iot import RANGES

# What an occupied or empty indoor room can plausibly read (inclusive).
PLAUSIBLE: Final[dict[str, tuple[float, float]]] = {
    "temperature_c": (10.0, 35.0),
    "humidity_pct": (15.0, 85.0),
    "light_lux": (0.0, 5000.0),
    "co2_ppm": (350.0, 5000.0),
}

# Where a range spike lands: bands outside PLAUSIBLE, inside RANGES.
_IMPLAUSIBLE: Final[dict[str, tuple[tuple[float, float], ...]]] = {
    "temperature_c": ((-40.0, 0.0), (50.0, 125.0)),
    "humidity_pct": ((0.0, 8.0), (92.0, 100.0)),
    "light_lux": ((25_000.0, 200_000.0),),
    "co2_ppm": ((8_000.0, 40_000.0),),
}

# How far a baseline spike lands from the value the device would have read, at least
# (and up to 1.4 times that): beyond four standard deviations of the device's readings
# in any hour of day, even an hour when lamps go on and off or CO2 climbs.
SPIKE_MIN_DEVIATION: Final[dict[str, float]] = {
    "temperature_c": 6.0,
    "humidity_pct": 20.0,
    "light_lux": 2500.0,
    "co2_ppm": 2000.0,
}

# A drift's offset when it ends, by metric: (least, most) in absolute value.
_DRIFT_OFFSET: Final[dict[str, tuple[float, float]]] = {
    "temperature_c": (2.0, 5.0),
    "humidity_pct": (8.0, 15.0),
    "light_lux": (150.0, 400.0),
    "co2_ppm": (300.0, 800.0),
}
# Measurements whose drift only goes up (a dirty optical path reads more, never less).
_DRIFTS_UP: Final = frozenset({"light_lux", "co2_ppm"})

# How long an episode lasts, in seconds of event time: (least, most).
DURATION_S: Final[dict[str, tuple[float, float]]] = {
    DRIFT: (2 * 3600.0, 8 * 3600.0),
    FLATLINE: (360.0, 1200.0),
    DROPOUT: (180.0, 900.0),
    CLOCK_SKEW: (3600.0, 6 * 3600.0),
}
SKEW_S: Final = (20.0, 90.0)  # a skewed clock is off by this much, ahead or behind


def spike_value(rng: random.Random, kind: str, metric: str, clean: float) -> float:
    """A spike of ``kind`` on ``metric`` where the device would have read ``clean``."""
    if kind == SPIKE_RANGE:
        low, high = rng.choice(_IMPLAUSIBLE[metric])
        return round(rng.uniform(low, high), 2)
    least = SPIKE_MIN_DEVIATION[metric]
    low, high = PLAUSIBLE[metric]
    up = clean + rng.uniform(least, 1.4 * least)
    down = clean - rng.uniform(least, 1.4 * least)
    # Up where there is room above, else down; normal readings leave room on one side.
    candidates = [v for v in (up, down) if low <= v <= high] or [min(up, high)]
    return round(rng.choice(candidates), 2)


def drift_offset(rng: random.Random, metric: str) -> float:
    low, high = _DRIFT_OFFSET[metric]
    offset = rng.uniform(low, high)
    return offset if metric in _DRIFTS_UP or rng.random() < 0.5 else -offset


def skew_s(rng: random.Random) -> float:
    return round(rng.uniform(*SKEW_S), 3) * rng.choice((-1, 1))


def within_range(metric: str, value: float) -> float:
    """``value`` held inside the contract's physical range (a drift must stay valid)."""
    low, high = RANGES[metric]
    return min(max(value, low), high)
