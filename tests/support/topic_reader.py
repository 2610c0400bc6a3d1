"""An oracle read back from the topic, independent of the flow."""

from __future__ import annotations

from datetime import UTC, datetime

from riverbed.contracts.payments import InvalidEvent, decode_transaction
from riverbed.settings import Settings
from riverbed.topics import PAYMENTS_TRANSACTIONS
from tests.support.flow_harness import read_topic


def valid_transaction_id(value: bytes | None, timestamp_ms: int) -> str | None:
    """The transaction_id of a message the contract accepts at its Kafka timestamp (as
    the flow judges it); None for an invalid one."""
    try:
        txn, _ = decode_transaction(value, datetime.fromtimestamp(timestamp_ms / 1000, UTC))
    except InvalidEvent:
        return None
    return txn.transaction_id


def distinct_valid_transactions(settings: Settings) -> int:
    """Distinct transaction_ids among the valid messages of payments.transactions."""
    ids = {
        valid_transaction_id(message.value(), message.timestamp()[1])
        for message in read_topic(settings, PAYMENTS_TRANSACTIONS)
    }
    return len(ids - {None})
