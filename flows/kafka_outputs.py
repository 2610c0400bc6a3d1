"""The flow's Kafka side effects: DLQ and alert messages, offset commits, and the
read-back that makes them idempotent across restarts.

Every message the flow publishes carries where it came from
(``source.topic``/``source.partition``/``source.offset`` headers). After a
crash, Bytewax replays from its last snapshot and the flow produces the same
messages again; :func:`delivered_since` reads the tail of the output topics
back so the sink can skip what is already there.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from flows.kafka_source import consumer_config
from flows.records import AlertRecord, DlqRecord
from riverbed.settings import Settings

log = logging.getLogger("riverbed.flow.kafka")

# Clock slack when reading back "what was produced since time t".
_SLACK_MS = 60_000


class DeliveryError(RuntimeError):
    """A message could not be delivered: the flow stops rather than lose it."""


@dataclass
class Delivered:
    """What one source partition already has in the output topics."""

    dlq_offsets: set[int] = field(default_factory=set)
    alert_ids: set[str] = field(default_factory=set)


def _headers(topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("source.topic", topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]


class KafkaOutputs:
    """Publishes one source partition's DLQ records and alerts; commits its offsets."""

    def __init__(
        self,
        settings: Settings,
        *,
        source_topic: str,
        partition: int,
        dlq_topic: str,
        alerts_topic: str,
    ) -> None:
        self.source_topic = source_topic
        self.partition = partition
        self.dlq_topic = dlq_topic
        self.alerts_topic = alerts_topic
        self._producer = Producer(
            {
                **settings.kafka_client_config(),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
            }
        )
        # Commits offsets for the group without joining it: allowed while the
        # group has no subscribed members, which is how the flow uses it.
        self._committer = Consumer(consumer_config(settings))
        self._failures: list[str] = []
        self._in_flight = 0

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        self._in_flight -= 1
        if err is not None:
            self._failures.append(str(err))

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, headers: list) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery
                )
                self._in_flight += 1
                break
            except BufferError:
                self._producer.poll(0.05)  # queue full: let deliveries drain
        self._producer.poll(0)

    def produce_dlq(self, records: Iterable[DlqRecord]) -> int:
        n = 0
        for r in records:
            source = _headers(self.source_topic, self.partition, r.offset)
            headers = [("error", r.error.encode()), *source]
            self._produce(self.dlq_topic, r.key, r.value, headers)
            n += 1
        return n

    def produce_alerts(self, alerts: Iterable[AlertRecord]) -> int:
        n = 0
        for a in alerts:
            headers = [
                ("alert.id", a.alert_id.encode()),
                *_headers(self.source_topic, self.partition, a.offset),
            ]
            self._produce(self.alerts_topic, a.card_id.encode(), a.payload, headers)
            n += 1
        return n

    def confirm(self, timeout: float = 120.0) -> None:
        """Wait until everything produced so far is acknowledged; raise if anything failed."""
        remaining = self._producer.flush(timeout)
        if self._failures or remaining:
            failures, self._failures = self._failures, []
            raise DeliveryError(
                f"{len(failures)} message(s) failed and {remaining} still in flight "
                f"after {timeout:.0f}s: {failures[:3]}"
            )

    def commit(self, next_offset: int, flushed_at: float) -> None:
        """Commit the group offset; the metadata records when (for :func:`delivered_since`)."""
        meta = json.dumps({"flushed_at": flushed_at})
        tp = TopicPartition(self.source_topic, self.partition, next_offset, meta)
        try:
            self._committer.commit(offsets=[tp], asynchronous=False)
        except KafkaException as exc:
            # Not data loss: the lake is already durable and the next flush commits again.
            log.warning("offset commit failed", extra={"part": self.partition, "err": exc})

    def committed_flush_time(self) -> float | None:
        """When the committed group offset was written, if this flow wrote it."""
        tp = TopicPartition(self.source_topic, self.partition)
        try:
            committed = self._committer.committed([tp], timeout=30)[0]
        except KafkaException:
            return None
        if committed.offset < 0 or not committed.metadata:
            return None
        try:
            return float(json.loads(committed.metadata)["flushed_at"])
        except (ValueError, KeyError, TypeError):
            return None

    def close(self) -> None:
        self._producer.flush(30)
        self._committer.close()


def delivered_since(
    settings: Settings,
    *,
    source_topic: str,
    partition: int,
    dlq_topic: str,
    alerts_topic: str,
    since: float | None,
) -> Delivered:
    """The DLQ offsets and alert ids of ``partition`` already in the output topics,
    among messages written since ``since`` (unix seconds; None: the whole topics)."""
    found = Delivered()
    consumer = Consumer(
        consumer_config(settings, **{"group.id": f"{settings.consumer_group}.readback"})
    )
    try:
        assignments = _tail_assignments(consumer, [dlq_topic, alerts_topic], since)
        if not assignments:
            return found
        consumer.assign([tp for tp, _end in assignments])
        ends = {(tp.topic, tp.partition): end for tp, end in assignments}
        wanted = str(partition).encode()
        source = source_topic.encode()
        deadline = time.monotonic() + 300
        while ends:
            if time.monotonic() > deadline:
                raise DeliveryError(f"reading back {sorted(ends)} took too long")
            for msg in consumer.consume(10_000, 0.02):
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("read-back error", extra={"err": msg.error()})
                    continue
                where = (msg.topic(), msg.partition())
                headers = dict(msg.headers() or ())
                if (
                    headers.get("source.partition") == wanted
                    and headers.get("source.topic") == source
                ):
                    if msg.topic() == dlq_topic:
                        found.dlq_offsets.add(int(headers["source.offset"]))
                    else:
                        found.alert_ids.add(headers["alert.id"].decode())
                if where in ends and msg.offset() + 1 >= ends[where]:
                    del ends[where]
            for where in [w for w in ends if _position(consumer, w) >= ends[w]]:
                del ends[where]
    finally:
        consumer.close()
    return found


def _position(consumer: Consumer, where: tuple[str, int]) -> int:
    pos = consumer.position([TopicPartition(where[0], where[1])])[0].offset
    return pos if pos >= 0 else -1


def _tail_assignments(
    consumer: Consumer, topics: list[str], since: float | None
) -> list[tuple[TopicPartition, int]]:
    """(start position, end offset) per partition with messages to read back."""
    out = []
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaException(meta.error if meta else f"topic {topic} missing")
        for p in sorted(meta.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=30, cached=False
            )
            if high <= low:
                continue
            start = low
            if since is not None:
                ts = int(since * 1000) - _SLACK_MS
                found = consumer.offsets_for_times([TopicPartition(topic, p, ts)], timeout=30)[0]
                # -1: no message at or after ts.
                start = high if found.offset < 0 else max(low, found.offset)
            if start < high:
                out.append((TopicPartition(topic, p, start), high))
    return out
