"""Where a recovery store's history begins, per Kafka partition.

With recovery on, a source partition without a Bytewax snapshot must start
where the (empty) state of the flow starts, not at the consumer group's
committed offset: the sinks commit offsets as soon as the lake has the data,
which can be before Bytewax wrote its first snapshot. A crash in between would
otherwise restart the stateful steps empty in the middle of the stream (lost
windows, forgotten resends, different alerts).

So the first run on a recovery store records the offsets it starts from (the
group's committed offsets, else the earliest) in ``<store>/start-offsets.json``,
with the time it did so; every later run without a snapshot starts there
again, and reads back published DLQ records and alerts from that time on.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from flows.kafka_source import consumer_config
from riverbed.settings import Settings

FILE_NAME = "start-offsets.json"


@dataclass(frozen=True)
class StartOffsets:
    offsets: dict[int, int]
    created_at: float  # unix seconds; everything the flow published since is after it


def group_or_earliest(settings: Settings, topic: str, partitions: list[int]) -> dict[int, int]:
    consumer = Consumer(consumer_config(settings))
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        committed = consumer.committed(tps, timeout=30)
        out = {}
        for tp in committed:
            if tp.error is None and tp.offset >= 0:
                out[tp.partition] = tp.offset
            else:
                low, _high = consumer.get_watermark_offsets(
                    TopicPartition(topic, tp.partition), timeout=30, cached=False
                )
                out[tp.partition] = max(low, 0)
        return out
    finally:
        consumer.close()


def load_or_record(
    store: Path, settings: Settings, topic: str, partitions: list[int]
) -> StartOffsets:
    """The store's start offsets; recorded now if this is the store's first run."""
    path = Path(store) / FILE_NAME
    if not path.exists():
        created = time.time()
        offsets = group_or_earliest(settings, topic, partitions)
        temp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        temp.write_text(
            json.dumps(
                {
                    "topic": topic,
                    "created_at": created,
                    "offsets": {str(p): o for p, o in offsets.items()},
                }
            )
        )
        try:
            os.link(temp, path)  # fails if another process recorded first: theirs wins
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    data = json.loads(path.read_text())
    return StartOffsets(
        offsets={int(p): int(o) for p, o in data["offsets"].items()},
        created_at=float(data["created_at"]),
    )
