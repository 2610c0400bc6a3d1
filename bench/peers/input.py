"""The oracle's input: the preloaded topic, read back, labelled by the generator.

:func:`bench.flow_bench.preload` produced the events of a seeded generator; the same
generator, run again, says which messages are valid (its ground truth, not the contract
code the contenders run). Reading the topic back says on which partition and offset
each landed; every message read must be the generated one at that place (checked), so
the labels belong to the bytes the contenders read. Only plain ``json`` and
``datetime`` parse the valid ones: nothing of the code under test is involved.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime

from confluent_kafka import Consumer, TopicPartition

from bench.flow_bench import PRELOAD_RATE, preload_start
from bench.peers.oracle import InputEvent, first_seen
from producers.payments import GeneratorConfig, PaymentsGenerator
from riverbed.settings import Settings

Record = tuple[bytes | None, bytes | None]


def read_back(settings: Settings, topic: str, ends: dict[int, int]) -> dict[int, list[Record]]:
    """Every (key, value) of ``topic`` up to ``ends``, per partition in offset order."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "bench.peers.oracle",
            "enable.auto.commit": False,
        }
    )
    records: dict[int, list[Record]] = {p: [] for p in ends}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        remaining = sum(ends.values())
        while remaining > 0:
            for msg in consumer.consume(10_000, 1.0):
                if msg.error() is not None:
                    continue
                part = msg.partition()
                if msg.offset() < ends[part]:
                    records[part].append((msg.key(), msg.value()))
                    remaining -= 1
    finally:
        consumer.close()
    return records


def labelled_input(
    settings: Settings, events: int, records: dict[int, list[Record]], seed: int = 7
) -> tuple[list[InputEvent], int]:
    """The valid first-seen transactions in produce order, and how many messages were
    invalid, from the generator that :func:`bench.flow_bench.preload` ran."""
    generator = PaymentsGenerator(
        GeneratorConfig.from_settings(settings), seed=seed, start=preload_start(), rate=PRELOAD_RATE
    )
    partition_of = {key: p for p, recs in records.items() for key, _ in recs}
    position = dict.fromkeys(records, 0)
    valid: list[InputEvent] = []
    invalid = 0
    for event in itertools.islice(generator, events):
        part = partition_of[event.key]
        offset = position[part]
        position[part] += 1
        if records[part][offset] != (event.key, event.value):
            raise RuntimeError(
                f"partition {part} offset {offset} is not the generated event "
                f"{event.transaction_id}: the topic holds another input"
            )
        if not event.valid:
            invalid += 1
            continue
        body = json.loads(event.value)
        stamp = datetime.fromisoformat(body["event_time"])
        valid.append(
            InputEvent(
                partition=part,
                offset=offset,
                transaction_id=body["transaction_id"],
                merchant_id=body["merchant_id"],
                event_ms=round(stamp.timestamp() * 1000),
                cents=round(body["amount"] * 100),
            )
        )
    if position != {p: len(recs) for p, recs in records.items()}:
        raise RuntimeError("the topic holds more messages than were generated")
    return first_seen(valid), invalid
