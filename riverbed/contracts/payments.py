"""The payments contract: what a transaction and a fraud alert look like on the wire.

``decode_transaction`` is on the flow's hot path, so it decodes with msgspec
(types checked in C) and then checks the rules msgspec cannot express. Every
rejection is an :class:`InvalidEvent` whose message names the field and the
rule, because that message goes to the dead-letter topic as the ``error``
header and a person reads it there. Any bytes at all give a transaction or an
``InvalidEvent``, never another exception (a property-based test holds it to that).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec

from riverbed.contracts.reference import COUNTRIES, CURRENCIES
from riverbed.contracts.wire import (
    InvalidEvent,
    decode_error,
    encode,
    parse_event_time,
)

__all__ = [
    "Alert",
    "CardProfile",
    "InvalidEvent",
    "Transaction",
    "check_rules",
    "decode_profile",
    "decode_transaction",
    "encode",
    "parse_event_time",
]

MAX_AMOUNT = 1_000_000
MAX_FUTURE = timedelta(minutes=5)
CHANNELS = ("pos", "online", "atm")

_MCC = re.compile(r"^\d{4}$")


class Transaction(msgspec.Struct, frozen=True):
    """A card transaction, as producers publish it to ``payments.transactions``."""

    transaction_id: str
    card_id: str
    merchant_id: str
    mcc: str
    amount: float
    currency: str
    country: str
    lat: float
    lon: float
    channel: Literal["pos", "online", "atm"]
    event_time: str


class Alert(msgspec.Struct, frozen=True):
    """A fraud alert, as the flow publishes it to ``payments.alerts``."""

    alert_id: str
    rule: str
    card_id: str
    transaction_id: str
    event_time: str
    detected_at: str
    score: float
    details: str


class CardProfile(msgspec.Struct, frozen=True):
    """A card's usual behaviour, computed from the lake by the batch layer and published
    to ``payments.card_profiles`` (compacted, keyed by card_id: the latest per card).

    Over the card's transactions in the window that ends at the lake's newest event
    (``window_days``): ``home_country`` its most frequent country, the mean and sample
    standard deviation of its amounts (``amount_std`` is None below two transactions),
    ``usual_hours`` the UTC hours of day holding at least a tenth of them, and
    ``usual_mccs`` its three most frequent merchant categories (ties: lowest code).
    """

    card_id: str
    txn_count: int
    home_country: str
    amount_mean: float
    amount_std: float | None
    usual_hours: list[int]
    usual_mccs: list[str]
    last_event_time: str  # RFC 3339: the newest transaction the profile includes
    computed_at: str  # RFC 3339, wall clock
    window_days: int


_decoder = msgspec.json.Decoder(Transaction)
_profile_decoder = msgspec.json.Decoder(CardProfile)


def decode_profile(raw: bytes) -> CardProfile:
    """A card profile from ``payments.card_profiles`` (its own publisher wrote it)."""
    return _profile_decoder.decode(raw)


def decode_transaction(
    raw: bytes | None, now: datetime | None = None
) -> tuple[Transaction, datetime]:
    """Decode and check one message value; return the transaction and its UTC event time.

    ``now`` decides what "in the future" means; it defaults to the wall clock.
    """
    if raw is None:
        raise InvalidEvent("value: message has no value (tombstone)")
    try:
        txn = _decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise decode_error(exc) from None
    event_time = check_rules(txn, now)
    return txn, event_time


def check_rules(txn: Transaction, now: datetime | None = None) -> datetime:
    """Check the rules of the contract that types alone do not; return the UTC event time."""
    for name in ("transaction_id", "card_id", "merchant_id"):
        if not getattr(txn, name).strip():
            raise InvalidEvent(f"{name}: must be a non-empty string")
    if not _MCC.match(txn.mcc):
        raise InvalidEvent(f"mcc: {txn.mcc!r} must be 4 digits")
    amount = txn.amount
    if not (0 < amount <= MAX_AMOUNT):
        raise InvalidEvent(f"amount: {amount!r} must be > 0 and <= {MAX_AMOUNT:,}")
    if abs(round(amount * 100) - amount * 100) > 1e-6:
        raise InvalidEvent(f"amount: {amount!r} has more than 2 decimals")
    if txn.currency not in CURRENCIES:
        raise InvalidEvent(f"currency: {txn.currency!r} is not an ISO 4217 code")
    if txn.country not in COUNTRIES:
        raise InvalidEvent(f"country: {txn.country!r} is not an ISO 3166 alpha-2 code")
    if not (-90 <= txn.lat <= 90):
        raise InvalidEvent(f"lat: {txn.lat!r} must be within -90..90")
    if not (-180 <= txn.lon <= 180):
        raise InvalidEvent(f"lon: {txn.lon!r} must be within -180..180")
    event_time = parse_event_time(txn.event_time)
    limit = (now or datetime.now(UTC)) + MAX_FUTURE
    if event_time > limit:
        raise InvalidEvent(f"event_time: {txn.event_time!r} is more than 5 minutes in the future")
    return event_time
