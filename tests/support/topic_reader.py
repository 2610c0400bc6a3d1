"""Read a topic back in full: an oracle for tests, independent of the flow."""

from __future__ import annotations

from datetime import UTC, datetime

from confluent_kafka import Consumer, TopicPartition

from riverbed.contracts.payments import InvalidEvent, decode_transaction
from riverbed.settings import Settings
from riverbed.topics import PAYMENTS_TRANSACTIONS


def read_all(settings: Settings, topic: str) -> list:
    """Every message of every partition, from the beginning to the current end."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "riverbed.tests.reader",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {}
        assignment = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high
                assignment.append(TopicPartition(topic, p, low))
        consumer.assign(assignment)
        messages = []
        while ends:
            for message in consumer.consume(10_000, timeout=5):
                if message.error():
                    continue
                messages.append(message)
                if message.offset() + 1 >= ends.get(message.partition(), 0):
                    ends.pop(message.partition(), None)
        return messages
    finally:
        consumer.close()


def distinct_valid_transactions(settings: Settings) -> int:
    """Distinct transaction_ids among the valid messages of payments.transactions."""
    ids = set()
    for message in read_all(settings, PAYMENTS_TRANSACTIONS):
        _kind, timestamp_ms = message.timestamp()
        try:
            txn, _ = decode_transaction(
                message.value(), datetime.fromtimestamp(timestamp_ms / 1000, UTC)
            )
        except InvalidEvent:
            continue
        ids.add(txn.transaction_id)
    return len(ids)
