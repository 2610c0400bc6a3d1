"""A Kafka source for Bytewax: one partition per Kafka partition, micro-batches, ticks.

Why not Bytewax's own KafkaSource: it keeps offsets only in its recovery store
(the consumer group never shows progress) and it drops consumer errors. This
one:

* reads each Kafka partition with its own ``Consumer`` and ``assign()`` (no group
  membership, no rebalances; Bytewax decides which worker reads which partition);
* emits one :class:`~flows.kit.records.SourceBatch` of up to ``batch_size`` messages
  per ``next_batch`` call, so Bytewax's per-item cost is paid per batch;
* resumes from its snapshot (the next offset) under recovery, else from the start
  offsets it is given (:mod:`flows.kit.start_offsets`: where the lake and the Kafka
  outputs are);
* emits a tick (an empty batch) every ``tick_s`` of wall time even when nothing
  arrives, saying whether the partition is caught up and idle, so downstream
  flushes on time and idle partitions do not hold windows open;
* with a ``table_topic`` (a compacted topic keyed like the source and with as many
  partitions, e.g. card profiles), also reads that topic's same-numbered partition:
  from its beginning to its end before the first batch (the whole table), then as it
  grows, passing its records along in ``SourceBatch.table``. The table is read again
  at every start (it is small and compacted), so it needs no offsets of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from flows.kit import shutdown
from flows.kit.records import RawRecord, SourceBatch
from riverbed.kafka_admin import close_polled, cluster_metadata
from riverbed.logs import LibrdkafkaLog
from riverbed.settings import Settings

log = logging.getLogger("riverbed.flow.source")
#: librdkafka's own lines of the flow's polled clients (consumers here, producers in
#: flows.kit.kafka_outputs), as the flow's log lines.
CLIENT_LOG = LibrdkafkaLog("riverbed.flow.kafka.client")

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


def polled_consumer(settings: Settings, **overrides: object) -> Consumer:
    """A consumer whose librdkafka log lines (a broker's connection lost or refused) come
    out as the flow's own (:class:`riverbed.logs.LibrdkafkaLog`), not as raw ``%3|…``
    lines on stderr. confluent-kafka hands them over in ``poll()``: a consumer that is
    only asked for metadata or offsets is polled with ``poll(0)`` after its calls."""
    return Consumer({**consumer_config(settings, **overrides), "logger": CLIENT_LOG})


def topic_partitions(settings: Settings, topic: str, timeout: float = 30.0) -> list[int]:
    """The topic's partitions, from the cluster (fails clearly if the topic is missing)."""
    consumer = polled_consumer(settings)
    try:
        meta = cluster_metadata(consumer, topic, timeout).topics.get(topic)
    finally:
        close_polled(consumer)
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
        table: TableReader | None = None,
    ) -> None:
        self._table = table
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
            raise StopIteration  # a clean stop: see flows.kit.shutdown
        messages = self._consumer.consume(self._batch_size, 0)
        # One comprehension, not a loop with a branch per message: this runs for every
        # message the flow reads (a tenth of its time as a loop). A timestamp that is
        # not available is -1, as librdkafka gives it.
        records: list[RawRecord] = [
            (m.offset(), m.key(), m.value(), m.timestamp()[1])
            for m in messages
            if m.error() is None
        ]
        if len(records) != len(messages):
            for msg in messages:
                err = msg.error()
                if err is not None:
                    self._on_error(err)
        table = self._table.read() if self._table is not None else None
        now = time.monotonic()
        if records:
            self._position = records[-1][0] + 1
            self._last_message = now
        full = len(messages) >= self._batch_size
        self._awake = None if records else datetime.now(UTC) + timedelta(seconds=_EMPTY_POLL_S)
        if not records and not table and now < self._next_tick:
            return []
        self._next_tick = now + self._tick_s
        caught_up = not full and self._caught_up()
        idle = caught_up and now - self._last_message >= self._idle_after_s
        return [
            SourceBatch(
                self._partition,
                records,
                self._position,
                caught_up,
                idle,
                table or None,
                backlog=full,
            )
        ]

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
        if self._table is not None:
            self._table.close()


class TableReader:
    """One partition of a table topic: everything in it at start, then what arrives."""

    def __init__(self, settings: Settings, topic: str, partition: int) -> None:
        self._tp = TopicPartition(topic, partition, OFFSET_BEGINNING)
        self._consumer = polled_consumer(settings)
        self._consumer.assign([self._tp])
        self._backlog = self._read_to_end()

    def _read_to_end(self, timeout: float = 60.0) -> list[RawRecord]:
        low, high = self._consumer.get_watermark_offsets(self._tp, timeout=30, cached=False)
        out: list[RawRecord] = []
        deadline = time.monotonic() + timeout
        while high > low:
            out.extend(self._records(self._consumer.consume(5000, 0.5)))
            # The position, not the last record: compaction leaves gaps in the offsets.
            position = self._consumer.position([self._tp])[0].offset
            if position >= high:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"could not read {self._tp.topic}/{self._tp.partition} to its end "
                    f"(offset {position} of {high}) within {timeout:.0f} s; "
                    "check the cluster with `riverbed kafka status`"
                )
        log.info(
            "read table partition",
            extra={"topic": self._tp.topic, "part": self._tp.partition, "records": len(out)},
        )
        return out

    def _records(self, messages: list) -> list[RawRecord]:
        out = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("table consumer error", extra={"topic": self._tp.topic, "err": err})
                continue
            ts_type, ts = msg.timestamp()
            out.append((msg.offset(), msg.key(), msg.value(), ts if ts_type else -1))
        return out

    def read(self) -> list[RawRecord]:
        """The table's records since the last call (the whole table at the first)."""
        if self._backlog:
            out, self._backlog = self._backlog, []
            return out
        return self._records(self._consumer.consume(1000, 0))

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
        table_topic: str | None = None,
        on_build: Callable[[int], None] | None = None,
    ) -> None:
        """``on_build(partition)`` is called as this worker builds a partition's part
        (:func:`flows.kit.stream.open_stream` starts that partition's Kafka outputs then)."""
        if table_topic is not None:
            table_partitions = topic_partitions(settings, table_topic)
            if not set(partitions) <= set(table_partitions):
                raise RuntimeError(
                    f"{table_topic} has partitions {table_partitions}, {topic} has "
                    f"{partitions}: a table topic must be partitioned like its stream "
                    "(riverbed/topics.py declares both with as many partitions)"
                )
        self._table_topic = table_topic
        # Where a partition without a recovery snapshot starts (flows.kit.start_offsets).
        self._start_offsets = start_offsets
        self._settings = settings
        self._topic = topic
        self._partitions = partitions
        self._batch_size = batch_size
        self._tick_s = tick_s
        self._idle_after_s = idle_after_s
        self._on_build = on_build

    def list_parts(self) -> list[str]:
        return [part_name(self._topic, p) for p in self._partitions]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> KafkaPartition:
        partition = part_number(for_part)
        if self._on_build is not None:
            self._on_build(partition)
        consumer = polled_consumer(self._settings)
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
            table=(
                TableReader(self._settings, self._table_topic, partition)
                if self._table_topic is not None
                else None
            ),
        )
