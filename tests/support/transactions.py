"""A transaction that keeps every rule of the payments contract, for tests to vary."""

from datetime import UTC, datetime

# The moment the example is judged at (its event time is a minute before).
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
VALID_TRANSACTION = {
    "transaction_id": "t-1",
    "card_id": "c-1",
    "merchant_id": "m-1",
    "mcc": "5411",
    "amount": 12.5,
    "currency": "EUR",
    "country": "FR",
    "lat": 48.85,
    "lon": 2.35,
    "channel": "pos",
    "event_time": "2026-11-25T11:59:00Z",
}
