"""The payments contract: what a transaction and a fraud alert look like on the wire.

``decode_transaction`` is on the flow's hot path, so it decodes with msgspec
(types, ranges and code lists checked in C) and then checks the rules msgspec cannot
express. Every
rejection is an :class:`InvalidEvent` whose message names the field and the
rule, because that message goes to the dead-letter topic as the ``error``
header and a person reads it there. Any bytes at all give a transaction or an
``InvalidEvent``, never another exception (a property-based test holds it to that).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from riverbed.contracts.reference import COUNTRIES, CURRENCIES
from riverbed.contracts.wire import (
    InvalidEvent,
    check_event_time,
    decode_error,
    encode,
    from_micros,
    micros,
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
    "decode_transaction_at",
    "encode",
    "parse_event_time",
]

MAX_AMOUNT = 1_000_000
CHANNELS = ("pos", "online", "atm")


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


class _CheckedTransaction(Transaction, frozen=True):
    """A :class:`Transaction` whose decoder checks in C what msgspec can express of the
    contract's rules (:func:`check_rules` says them all, in Python).

    A value it rejects is decoded again as a plain :class:`Transaction` and judged by
    :func:`check_rules`, whose reason goes to the DLQ: msgspec's own messages ("Expected
    `float` <= 1000000") are not the contract's. So every constraint here is one that
    :func:`check_rules` also enforces, never more: the fast path may only turn away
    what the rules turn away (a property test holds the two paths to the same verdicts
    and reasons). Measured on 100,000 generated messages (2026-12-02): 1.74 µs a message
    to decode and check before, 1.53 µs with it; the payments processor 6.4 -> 6.0 µs.
    """

    transaction_id: Annotated[str, msgspec.Meta(min_length=1)]
    card_id: Annotated[str, msgspec.Meta(min_length=1)]
    merchant_id: Annotated[str, msgspec.Meta(min_length=1)]
    mcc: Annotated[str, msgspec.Meta(min_length=4, max_length=4)]
    amount: Annotated[float, msgspec.Meta(gt=0, le=MAX_AMOUNT)]
    currency: Literal[tuple(sorted(CURRENCIES))]  # type: ignore[valid-type]
    country: Literal[tuple(sorted(COUNTRIES))]  # type: ignore[valid-type]
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]


_decoder = msgspec.json.Decoder(Transaction)
_checked_decoder = msgspec.json.Decoder(_CheckedTransaction)
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
    txn, event_us = decode_transaction_at(raw, None if now is None else micros(now))
    return txn, from_micros(event_us)


def decode_transaction_at(raw: bytes | None, now_us: int | None) -> tuple[Transaction, int]:
    """:func:`decode_transaction` with times in microseconds since the epoch (the flow's
    hot path: "now" is each message's Kafka timestamp)."""
    try:
        txn = _checked_decoder.decode(raw)  # type: ignore[arg-type]
    except (msgspec.DecodeError, UnicodeDecodeError, TypeError):
        # Invalid, or the fast path is not sure: the contract's rules say why.
        if raw is None:
            raise InvalidEvent("value: message has no value (tombstone)") from None
        try:
            txn = _decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise decode_error(exc) from None
        return txn, check_rules(txn, now_us)
    # What the decoder could not check: blank ids, digits, cents, the event time.
    cents = txn.amount * 100
    if (
        not (txn.transaction_id.strip() and txn.card_id.strip() and txn.merchant_id.strip())
        or not txn.mcc.isdecimal()
        or abs(round(cents) - cents) > 1e-6
    ):
        return txn, check_rules(txn, now_us)  # raises, naming the field
    return txn, check_event_time(txn.event_time, now_us)


def check_rules(txn: Transaction, now_us: int | None = None) -> int:
    """Check the rules of the contract that types alone do not; return the event time
    in microseconds since the epoch."""
    # Spelled out, not a loop over the names: this runs for every message of the flow.
    if not (txn.transaction_id.strip() and txn.card_id.strip() and txn.merchant_id.strip()):
        for name in ("transaction_id", "card_id", "merchant_id"):
            if not getattr(txn, name).strip():
                raise InvalidEvent(f"{name}: must be a non-empty string")
    mcc = txn.mcc
    if not (len(mcc) == 4 and mcc.isdecimal()):  # \d{4}: isdecimal is \d, and cheaper
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
    return check_event_time(txn.event_time, now_us)
