"""Readings as bytes: the JSON a device publishes, and the ways a malformed message
breaks the IoT contract (:func:`riverbed.contracts.iot.decode_reading`).

A device sends only what it measures: the other measurements are absent, which the
contract allows (absent or null).
"""

from __future__ import annotations

import random
from typing import Final

import msgspec

from producers.payments.wire import format_event_time
from riverbed.contracts.iot import METRICS, RANGES

# One per rule of the contract: what each is made to break is in corrupt().
INVALID_KINDS: Final = (
    "broken_json",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "no_measurement",
    "empty_id",
    "bad_time",
    "future_time",
)
_REQUIRED: Final = ("reading_id", "device_id", "room_id", "event_time")

_encode = msgspec.json.Encoder().encode


def reading_fields(
    reading_id: str, device_id: str, room_id: str, event_time: float, values: dict[str, float]
) -> dict[str, object]:
    return {
        "reading_id": reading_id,
        "device_id": device_id,
        "room_id": room_id,
        "event_time": format_event_time(event_time),
        **values,
    }


def encode(fields: dict[str, object]) -> bytes:
    return _encode(fields)


def corrupt(kind: str, fields: dict[str, object], rng: random.Random, now: float) -> bytes:
    """The payload of a valid reading broken in one way the contract rejects; ``now`` is
    when it is sent (a future time is later than the contract's five minutes after it)."""
    broken = dict(fields)
    measured = [m for m in METRICS if m in broken]
    if kind == "broken_json":
        good = _encode(broken)
        return good[: rng.randrange(1, len(good) - 1)]
    if kind == "missing_field":
        del broken[rng.choice(_REQUIRED)]
    elif kind == "wrong_type":
        name = rng.choice((*measured, "device_id"))
        broken[name] = str(broken[name]) if name in measured else 17
    elif kind == "out_of_range":
        name = rng.choice(measured)
        low, high = RANGES[name]
        broken[name] = rng.choice((low - rng.uniform(1.0, 100.0), high * rng.uniform(1.01, 3.0)))
    elif kind == "no_measurement":
        for name in measured:
            if rng.random() < 0.5:
                del broken[name]
            else:
                broken[name] = None
    elif kind == "empty_id":
        broken[rng.choice(("reading_id", "device_id", "room_id"))] = rng.choice(("", "  "))
    elif kind == "bad_time":
        good = str(broken["event_time"])
        broken["event_time"] = rng.choice((good.rstrip("Z"), good.replace("T", "_"), "yesterday"))
    elif kind == "future_time":
        broken["event_time"] = format_event_time(now + rng.uniform(3600.0, 86_400.0))
    else:  # pragma: no cover - INVALID_KINDS and this function move together
        raise ValueError(f"unknown invalid kind {kind!r}")
    return _encode(broken)
