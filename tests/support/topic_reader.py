"""An oracle read back from the topic, independent of the flow."""

from __future__ import annotations

from datetime import UTC, datetime

from riverbed.contracts.payments import InvalidEvent, decode_transaction
from riverbed.settings import Settings
from riverbed.topics import PAYMENTS_TRANSACTIONS
from tests.support.flow_harness import read_topic


def distinct_valid_transactions(settings: Settings) -> int:
    """Distinct transaction_ids among the valid messages of payments.transactions."""
    ids = set()
    for message in read_topic(settings, PAYMENTS_TRANSACTIONS):
        _kind, timestamp_ms = message.timestamp()
        try:
            txn, _ = decode_transaction(
                message.value(), datetime.fromtimestamp(timestamp_ms / 1000, UTC)
            )
        except InvalidEvent:
            continue
        ids.add(txn.transaction_id)
    return len(ids)
