"""Every rule of the transaction contract (DESIGN.md), with valid and invalid examples."""

import json
from datetime import UTC, datetime

import pytest

from riverbed.contracts.payments import InvalidEvent, decode_transaction
from tests.support.transactions import NOW, VALID_TRANSACTION

VALID = VALID_TRANSACTION


def raw(**changes: object) -> bytes:
    event = {**VALID, **changes}
    return json.dumps({k: v for k, v in event.items() if v is not ...}).encode()


def test_a_valid_transaction_decodes_with_utc_event_time() -> None:
    txn, event_time = decode_transaction(raw(event_time="2026-11-25T12:59:00+01:00"), NOW)
    assert txn.card_id == "c-1"
    assert event_time == datetime(2026, 11, 25, 11, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": 1_000_000},
        {"amount": 0.01},
        {"amount": 19.99},
        {"amount": 7},
        {"channel": "online"},
        {"channel": "atm", "mcc": "6011"},
        {"lat": -90, "lon": 180},
        {"lat": 90, "lon": -180},
        {"currency": "JPY", "country": "JP"},
        {"event_time": "2026-11-25T12:04:59Z"},
        {"event_time": "2026-11-25T06:00:00.123456-05:00"},
        {"event_time": "2020-01-01T00:00:00Z"},
    ],
)
def test_valid_examples(changes: dict[str, object]) -> None:
    decode_transaction(raw(**changes), NOW)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "value: not valid JSON"),
        (b'{"transaction_id": "t"', "value: not valid JSON"),
        (b"[1, 2]", "value"),
        (None, "value: message has no value"),
        (raw(card_id=...), "card_id: missing required field"),
        (raw(event_time=...), "event_time: missing required field"),
        (raw(transaction_id=""), "transaction_id: must be a non-empty string"),
        (raw(card_id="  "), "card_id: must be a non-empty string"),
        (raw(merchant_id=""), "merchant_id: must be a non-empty string"),
        (raw(card_id=42), "card_id: expected `str`, got `int`"),
        (raw(amount="12.50"), "amount: expected `float`, got `str`"),
        (raw(lat=None), "lat: expected `float`, got `null`"),
        (raw(mcc="541"), "mcc: '541' must be 4 digits"),
        (raw(mcc="54a1"), "mcc: '54a1' must be 4 digits"),
        (raw(mcc="5411\n"), "mcc: '5411\\n' must be 4 digits"),
        (raw(mcc=5411), "mcc: expected `str`, got `int`"),
        (raw(amount=0), "amount: 0"),
        (raw(amount=-5), "amount: -5"),
        (raw(amount=1_000_000.01), "amount: 1000000.01"),
        (raw(amount=12.345), "amount: 12.345 has more than 2 decimals"),
        (raw(currency="eur"), "currency: 'eur' is not an ISO 4217 code"),
        (raw(currency="XYZ"), "currency: 'XYZ' is not an ISO 4217 code"),
        (raw(country="FRA"), "country: 'FRA' is not an ISO 3166 alpha-2 code"),
        (raw(country="QQ"), "country: 'QQ' is not an ISO 3166 alpha-2 code"),
        (raw(lat=90.5), "lat: 90.5 must be within -90..90"),
        (raw(lon=-180.1), "lon: -180.1 must be within -180..180"),
        (raw(channel="phone"), "channel: invalid enum value 'phone'"),
        (
            raw(event_time="2026-11-25T11:59:00"),
            "event_time: '2026-11-25T11:59:00' is not RFC 3339",
        ),
        (raw(event_time="2026-11-25"), "event_time: '2026-11-25' is not RFC 3339"),
        (
            raw(event_time="2026-13-45T11:59:00Z"),
            "event_time: '2026-13-45T11:59:00Z' is not a valid",
        ),
        (
            raw(event_time="2026-11-25T12:05:01Z"),
            "event_time: '2026-11-25T12:05:01Z' is more than 5",
        ),
    ],
)
def test_invalid_examples_name_the_field_and_the_rule(payload: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_transaction(payload, NOW)
    assert str(caught.value).startswith(reason.split(":")[0])
    assert reason in str(caught.value)
