"""Where the flow starts reading a partition when Bytewax has no snapshot of it.

The truth is in the outputs, as in delta-io's kafka-delta-ingest: the flow's events
table in the lake (payments' ``transactions``) says, per partition, the next offset it
holds (its Delta application transactions), and the consumer group's committed offset says where the
Kafka outputs (DLQ, alerts) end. The flow starts at the older of the two, so neither
side misses anything; each side skips what it already has (see
:mod:`flows.kit.lake_sink`). Neither known: the earliest offset still in the topic.

With recovery on, the first run on a recovery store records these offsets in
``<store>/start-offsets.json``, and every later run without a snapshot starts there
again: the stateful steps (fraud history, open windows) restart empty from where
the store's history starts, not in the middle of it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from confluent_kafka import TopicPartition

from flows.kit.kafka_source import polled_consumer
from riverbed import lake
from riverbed.kafka_admin import close_polled, committed_offsets
from riverbed.settings import Settings

FILE_NAME = "start-offsets.json"

log = logging.getLogger("riverbed.flow.source")


def resume_offsets(
    settings: Settings, topic: str, partitions: list[int], events: tuple[str, str]
) -> dict[int, int]:
    """Per partition: min(lake's next offset, group's committed offset), at least the earliest.

    ``events`` is the (domain, dataset) of the table the topic's valid events land in.
    """
    domain, dataset = events
    in_lake: dict[int, int] = {}
    if lake.table_exists(settings.lake_dir, dataset, domain):
        table = lake.open_table(settings.lake_dir, dataset, domain)
        in_lake = lake.stored_offsets(table, topic, partitions)
    # read_uncommitted: the broker then answers with the offsets last committed, never
    # one still pending in a transaction, instead of waiting (up to the 60 s
    # transaction.timeout.ms) for the open transaction of a killed run to be aborted.
    # Starting below a pending commit is safe: the outputs skip what they already have,
    # and each partition's KafkaOutputs reads the stable offset again after its
    # init_transactions() has fenced that run.
    consumer = polled_consumer(settings, **{"isolation.level": "read_uncommitted"})
    try:
        committed = committed_offsets(consumer, topic, partitions)
        _warn_if_outputs_ahead(settings, topic, in_lake, committed)
        out = {}
        for p in partitions:
            low, _high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=30, cached=False
            )
            start = min(in_lake.get(p, 0), committed.get(p, 0))
            out[p] = max(start, low, 0)
        return out
    finally:
        close_polled(consumer)


def _warn_if_outputs_ahead(
    settings: Settings, topic: str, in_lake: dict[int, int], committed: dict[int, int]
) -> None:
    """The lake commits before the Kafka outputs, so the group is never ahead of the lake
    after a crash: when it is, the lake was deleted or moved, or this group served
    another lake. The flow then fills the lake again but does not publish the alerts
    and dead letters below the group's offsets a second time: say so, and what to do."""
    ahead = {p: (in_lake.get(p, 0), o) for p, o in committed.items() if o > in_lake.get(p, 0)}
    if ahead:
        log.warning(
            "the consumer group is ahead of the lake: alerts and dead letters below its "
            "offsets were published before and are not published again; the lake is "
            "filled from its own offsets. If this lake is new and the alerts should be "
            "published again, set RIVERBED_CONSUMER_GROUP to a new group",
            extra={
                "group": settings.consumer_group,
                "topic": topic,
                "lake_dir": str(settings.lake_dir),
                "partitions": {p: {"lake": lk, "group": g} for p, (lk, g) in sorted(ahead.items())},
            },
        )


def load_or_record(
    store: Path, settings: Settings, topic: str, partitions: list[int], events: tuple[str, str]
) -> dict[int, int]:
    """The store's start offsets; recorded now if this is the store's first run."""
    path = Path(store) / FILE_NAME
    if not path.exists():
        offsets = resume_offsets(settings, topic, partitions, events)
        temp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        temp.write_text(
            json.dumps({"topic": topic, "offsets": {str(p): o for p, o in offsets.items()}})
        )
        try:
            os.link(temp, path)  # fails if another process recorded first: theirs wins
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    data = json.loads(path.read_text())
    return {int(p): int(o) for p, o in data["offsets"].items()}
