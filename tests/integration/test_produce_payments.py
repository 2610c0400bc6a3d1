"""The payments producer against a real broker: what is sent is what a consumer reads back."""

from __future__ import annotations

import itertools
import os
import time
from collections import defaultdict

import msgspec
import pytest
from confluent_kafka import Consumer, TopicPartition

from producers.kafka_loop import produce, producer_config
from producers.payments import GeneratorConfig, PaymentsGenerator, produce_payments
from riverbed.kafka_admin import high_watermarks
from riverbed.settings import Settings
from riverbed.topics import PAYMENTS_TRANSACTIONS, topic

pytestmark = pytest.mark.kafka

PARTITIONS = topic(PAYMENTS_TRANSACTIONS).partitions


def read_back(settings: Settings, name: str) -> list[tuple[int, bytes | None, bytes | None]]:
    """Every message of the topic as (partition, key, value), read up to the high watermarks."""
    ends = {p: high for p, (_, high) in high_watermarks(settings, name).items()}
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "test.produce-payments",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(name, p, 0) for p in ends])
    messages: list[tuple[int, bytes | None, bytes | None]] = []
    remaining = {p for p, high in ends.items() if high > 0}
    deadline = time.monotonic() + 60
    try:
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                assert msg.error() is None, msg.error()
                messages.append((msg.partition(), msg.key(), msg.value()))
                if msg.offset() + 1 >= ends[msg.partition()]:
                    remaining.discard(msg.partition())
    finally:
        consumer.close()
    return messages


def test_generated_events_arrive_keyed_by_card_one_partition_per_card(
    kafka_settings: Settings,
) -> None:
    generator = PaymentsGenerator(
        GeneratorConfig.from_settings(kafka_settings),
        seed=2024,
        start=time.time(),
        rate=kafka_settings.producer_rate,
        wall_clock=time.time,
    )
    events = list(itertools.islice(generator, 10_000))
    summary = produce(events, topic=PAYMENTS_TRANSACTIONS, config=producer_config(kafka_settings))
    assert (summary.sent, summary.delivered, summary.failed) == (10_000, 10_000, 0)
    assert summary.ok and summary.stopped_by == "exhausted"

    received = read_back(kafka_settings, PAYMENTS_TRANSACTIONS)
    assert len(received) == 10_000
    assert sorted((k, v) for _, k, v in received) == sorted((e.key, e.value) for e in events)
    partitions_of_card: dict[bytes | None, set[int]] = defaultdict(set)
    for partition, key, _ in received:
        partitions_of_card[key].add(partition)
    assert all(len(parts) == 1 for parts in partitions_of_card.values())
    assert {p for p, _, _ in received} == set(range(PARTITIONS))
    for event in events:
        if event.valid:
            assert msgspec.json.decode(event.value)["card_id"].encode() == event.key


def test_produce_payments_counts_and_reports(kafka_settings: Settings) -> None:
    summary = produce_payments(kafka_settings, rate=0, count=5000, duration=None, seed=99)
    assert summary.seed == 99
    assert (summary.sent, summary.delivered, summary.failed, summary.undelivered) == (
        5000,
        5000,
        0,
        0,
    )
    assert summary.stopped_by == "count"
    assert "seed 99" in summary.line()
    assert len(read_back(kafka_settings, PAYMENTS_TRANSACTIONS)) == 5000


def test_the_rate_limit_holds(kafka_settings: Settings) -> None:
    summary = produce_payments(kafka_settings, rate=500, count=1000, duration=None, seed=1)
    assert summary.sent == 1000
    assert 1.7 <= summary.elapsed_s <= 4.0
    assert summary.events_per_s == pytest.approx(500, rel=0.2)


def test_a_duration_stops_the_run_and_progress_is_reported(kafka_settings: Settings) -> None:
    lines: list[str] = []
    summary = produce(
        ((b"k", b"v") for _ in itertools.count()),
        topic=PAYMENTS_TRANSACTIONS,
        config=producer_config(kafka_settings),
        rate=1000,
        duration=1.5,
        progress=lines.append,
        progress_interval_s=0.5,
    )
    assert summary.stopped_by == "duration"
    assert summary.sent == pytest.approx(1500, rel=0.15)
    assert summary.ok
    assert len(lines) >= 2 and "events/s" in lines[0]


def test_a_delivery_failure_is_counted(kafka_settings: Settings) -> None:
    too_big = os.urandom(2_000_000)  # incompressible, above the broker's 1 MB limit
    summary = produce(
        [(b"k", b"fine"), (b"k", too_big)],
        topic=PAYMENTS_TRANSACTIONS,
        config=producer_config(kafka_settings, {"message.max.bytes": "3000000"}),
    )
    assert summary.sent == 2
    assert (summary.delivered, summary.failed) == (1, 1)
    assert not summary.ok
    assert summary.first_error
