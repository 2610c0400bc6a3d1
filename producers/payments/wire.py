"""Events as bytes: the transaction JSON, its time format, and the ways an invalid
message breaks the contract."""

from __future__ import annotations

import math
import random
import time
from typing import Final

import msgspec

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


def corrupt(kind: str, fields: dict[str, object], rng: random.Random, clock: float) -> bytes:
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


def amount_text(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


# Formatting numbers is a visible share of an event's cost: look the common ones up.
AMOUNT_TEXT_LEN: Final = 50_000  # every normal amount (< 500.00)
AMOUNT_TEXT: Final = tuple(amount_text(c) for c in range(AMOUNT_TEXT_LEN))
MILLIS_END: Final = tuple(f'{ms:03d}Z"}}' for ms in range(1000))  # closes event_time and the object


def format_event_time(t: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-01-31T12:00:00.123Z``."""
    sec = math.floor(t)
    ms = min(999, int((t - sec) * 1000))
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(sec))}.{ms:03d}Z"
