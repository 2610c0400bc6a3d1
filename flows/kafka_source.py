"""A Kafka source for Bytewax: one partition per Kafka partition, micro-batches, ticks.

Why not Bytewax's own KafkaSource: it keeps offsets only in its recovery store
(the consumer group never shows progress) and it drops consumer errors. This
one:

* reads each Kafka partition with its own ``Consumer`` and ``assign()`` (no group
  membership, no rebalances; Bytewax decides which worker reads which partition);
* emits one :class:`~flows.records.SourceBatch` of up to ``batch_size`` messages
  per ``next_batch`` call, so Bytewax's per-item cost is paid per batch;
* resumes from its snapshot (the next offset) under recovery, else from the start
  offsets it is given (:mod:`flows.start_offsets`: where the lake and the Kafka
  outputs are);
* emits a tick (an empty batch) every ``tick_s`` of wall time even when nothing
  arrives, saying whether the partition is caught up and idle, so downstream
  flushes on time and idle partitions do not hold windows open.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from flows import shutdown
from flows.records import RawRecord, SourceBatch
from riverbed.kafka_admin import cluster_metadata
from riverbed.settings import Settings

log = logging.getLogger("riverbed.flow.source")

# Back-off between polls when the partition had nothing; bounds idle CPU and the
# added latency (a message waits at most this long in the local queue).
_EMPTY_POLL_S = 0.01


def part_name(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def part_number(name: str) -> int:
    return int(name.rsplit("/", 1)[1])


def consumer_config(settings: Settings, **overrides: str | int | bool) -> dict:
    conf: dict = {
        **settings.kafka_client_config("flows"),
        "group.id": settings.consumer_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # One consumer per partition: a smaller prefetch queue each.
        "queued.max.messages.kbytes": 16384,
        "fetch.wait.max.ms": 100,
    }
    conf.update(overrides)
    return conf


def topic_partitions(settings: Settings, topic: str, timeout: float = 30.0) -> list[int]:
    """The topic's partitions, from the cluster (fails clearly if the topic is missing)."""
    consumer = Consumer(consumer_config(settings))
    try:
        meta = cluster_metadata(consumer, topic, timeout).topics.get(topic)
    finally:
        consumer.close()
    if meta is None or meta.error is not None or not meta.partitions:
        reason = meta.error if meta is not None else "not found"
        raise RuntimeError(
            f"topic {topic!r} is not available ({reason}); create it with `riverbed topics apply`"
        )
    return sorted(meta.partitions)


class KafkaPartition(StatefulSourcePartition[SourceBatch, int]):
    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        partition: int,
        position: int,
        *,
        batch_size: int,
        tick_s: float,
        idle_after_s: float,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._partition = partition
        self._tp = TopicPartition(topic, partition)
        self._position = position
        self._batch_size = batch_size
        self._tick_s = tick_s
        self._idle_after_s = idle_after_s
        now = time.monotonic()
        self._next_tick = now
        self._last_message = now
        self._awake: datetime | None = None

    def next_batch(self) -> list[SourceBatch]:
        if shutdown.requested():
            raise StopIteration  # a clean stop: see flows.shutdown
        messages = self._consumer.consume(self._batch_size, 0)
        records: list[RawRecord] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._on_error(err)
                continue
            ts_type, ts = msg.timestamp()
            records.append((msg.offset(), msg.key(), msg.value(), ts if ts_type else -1))
        now = time.monotonic()
        if records:
            self._position = records[-1][0] + 1
            self._last_message = now
        full = len(messages) >= self._batch_size
        self._awake = None if full else datetime.now(UTC) + timedelta(seconds=_EMPTY_POLL_S)
        if not records and now < self._next_tick:
            return []
        self._next_tick = now + self._tick_s
        caught_up = not full and self._caught_up()
        idle = caught_up and now - self._last_message >= self._idle_after_s
        return [SourceBatch(self._partition, records, self._position, caught_up, idle)]

    def _caught_up(self) -> bool:
        _low, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        if high < 0:
            # Nothing fetched yet (e.g. an empty partition): ask the broker.
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    self._tp, timeout=1.0, cached=False
                )
            except KafkaException as exc:
                log.warning("watermark query failed", extra={"part": self._partition, "err": exc})
                return False
        return self._position >= high

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise KafkaException(err)
        # Transient (broker down, leader moving): librdkafka retries by itself.
        log.warning(
            "consumer error", extra={"topic": self._topic, "part": self._partition, "err": err}
        )

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._position

    def close(self) -> None:
        self._consumer.close()


class KafkaPartitionedSource(FixedPartitionedSource[SourceBatch, int]):
    def __init__(
        self,
        settings: Settings,
        topic: str,
        partitions: list[int],
        *,
        start_offsets: dict[int, int],
        batch_size: int = 5000,
        tick_s: float = 0.5,
        idle_after_s: float = 3.0,
    ) -> None:
        # Where a partition without a recovery snapshot starts (flows.start_offsets).
        self._start_offsets = start_offsets
        self._settings = settings
        self._topic = topic
        self._partitions = partitions
        self._batch_size = batch_size
        self._tick_s = tick_s
        self._idle_after_s = idle_after_s

    def list_parts(self) -> list[str]:
        return [part_name(self._topic, p) for p in self._partitions]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> KafkaPartition:
        partition = part_number(for_part)
        consumer = Consumer(consumer_config(self._settings))
        if resume_state is not None:
            position, origin = resume_state, "recovery snapshot"
        else:
            position, origin = self._start_offsets.get(partition, 0), "lake and group offsets"
        consumer.assign([TopicPartition(self._topic, partition, position)])
        log.info(
            "reading partition",
            extra={"topic": self._topic, "part": partition, "offset": position, "from": origin},
        )
        return KafkaPartition(
            consumer,
            self._topic,
            partition,
            position,
            batch_size=self._batch_size,
            tick_s=self._tick_s,
            idle_after_s=self._idle_after_s,
        )
