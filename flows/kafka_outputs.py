"""The flow's Kafka side: DLQ and alert messages in Kafka transactions, fenced.

One :class:`KafkaOutputs` per partition of the source topic. Its producer has a
``transactional.id`` stable per flow and source partition
(``<consumer group>/<topic>/<partition>``), so whichever process reads that partition
next calls ``init_transactions()`` with the same id, which fences the previous owner
(a second copy of the flow, a zombie): its next transactional call fails with
``_FENCED`` and it stops (:class:`ProducerFenced`) without publishing anything more.

Each transaction holds the partition's DLQ records and alerts and, through
``send_offsets_to_transaction``, the consumer group's offset after the last message
it covers: the messages and the offset become visible together, or not at all.
Consumers of ``payments.alerts`` and the DLQ read with ``isolation.level =
read_committed`` (librdkafka's default, set explicitly in :data:`READ_COMMITTED`), so
they never see the messages of an aborted transaction.

After a crash, the group's committed offset is exactly where the published outputs
end: a replay skips every record before it (:attr:`KafkaOutputs.committed`). That
replaces reading the output topics back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from flows.kafka_source import consumer_config
from flows.records import AlertRecord, DlqRecord
from riverbed.kafka_admin import committed_offsets
from riverbed.settings import Settings

log = logging.getLogger("riverbed.flow.kafka")

#: What every reader of a topic written in transactions (alerts, DLQ) must set.
READ_COMMITTED = {"isolation.level": "read_committed"}

_TIMEOUT_S = 60.0
# While a partition is caught up, a transaction left open longer than this is
# committed at the next chance, so an alert waits at most about this long (plus a
# source tick) to become visible. While it works through a backlog, transactions are
# committed at flushes only: each commit costs ~10 ms of the worker's time.
MAX_OPEN_S = 0.2


class ProducerFenced(RuntimeError):
    """A newer instance took over this partition's transactional.id: this one must stop."""


class OutputError(RuntimeError):
    """A transaction could not be committed: the flow stops and replays rather than lose it."""


def transactional_id(group: str, topic: str, partition: int) -> str:
    return f"{group}/{topic}/{partition}"


def _headers(topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("source.topic", topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]


class KafkaOutputs:
    """Publishes one source partition's DLQ records and alerts, transactionally."""

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
        self.transactional_id = transactional_id(settings.consumer_group, source_topic, partition)
        self._producer = Producer(
            {
                **settings.kafka_client_config(),
                "transactional.id": self.transactional_id,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "transaction.timeout.ms": 60_000,
                # A transaction's partitions are registered with the coordinator as its
                # first records go out; librdkafka's default 100 ms retry back-off then
                # sits inside every send_offsets_to_transaction (measured: ~100 ms a
                # commit; with this and the flush in commit(), ~10 ms).
                "retry.backoff.ms": 10,
                "retry.backoff.max.ms": 100,
            }
        )
        # Not a group member (the source assigns partitions itself): it only gives the
        # group's metadata to send_offsets_to_transaction and reads the committed offset.
        self._group = Consumer(consumer_config(settings, **READ_COMMITTED))
        self._metadata = self._group.consumer_group_metadata()
        self._call(self._producer.init_transactions, _TIMEOUT_S)
        # init_transactions() finished or aborted whatever the previous owner left open,
        # so the committed offset is now final.
        self.committed = self._read_committed()
        self._open_since: float | None = None
        # A partition's sink publishes from its worker; any sink of the process may
        # commit it in a flush (flows.lake_commits): one transactional call at a time.
        self._lock = threading.RLock()

    # -- the transaction --------------------------------------------------------------

    def _call(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        try:
            fn(*args)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED) or (
                err.fatal() and "fenced" in err.str().lower()
            ):
                raise ProducerFenced(
                    f"partition {self.source_topic}/{self.partition}: another instance of "
                    f"the flow took over transactional.id {self.transactional_id!r} "
                    "(a second copy is running); this one stops without publishing more"
                ) from exc
            raise OutputError(
                f"partition {self.source_topic}/{self.partition}: Kafka transaction "
                f"failed ({err.str()}); the flow stops and resumes from the last commit"
            ) from exc

    def _begin(self) -> None:
        if self._open_since is None:
            self._call(self._producer.begin_transaction)
            self._open_since = time.monotonic()

    def publish(self, dlq: Iterable[DlqRecord], alerts: Iterable[AlertRecord]) -> int:
        """Add records to the open transaction (opening one); how many."""
        with self._lock:
            return self._publish(dlq, alerts)

    def _publish(self, dlq: Iterable[DlqRecord], alerts: Iterable[AlertRecord]) -> int:
        n = 0
        for r in dlq:
            if n == 0:
                self._begin()
            headers = [
                ("error", r.error.encode()),
                *_headers(self.source_topic, self.partition, r.offset),
            ]
            self._produce(self.dlq_topic, r.key, r.value, headers)
            n += 1
        for a in alerts:
            if n == 0:
                self._begin()
            headers = [
                ("alert.id", a.alert_id.encode()),
                *_headers(self.source_topic, self.partition, a.offset),
            ]
            self._produce(self.alerts_topic, a.card_id.encode(), a.payload, headers)
            n += 1
        return n

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, headers: list) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:
                self._producer.poll(0.05)  # queue full: let deliveries drain
        self._producer.poll(0)

    def due(self) -> bool:
        """An open transaction has waited long enough: commit it now."""
        return self._open_since is not None and time.monotonic() - self._open_since >= MAX_OPEN_S

    def commit(self, next_offset: int) -> bool:
        """Commit the open transaction with the group offset ``next_offset`` (opening one
        if only the offset moved); whether anything was committed."""
        with self._lock:
            return self._commit(next_offset)

    def _commit(self, next_offset: int) -> bool:
        if self._open_since is None and next_offset <= self.committed:
            return False
        self._begin()
        self._producer.flush(_TIMEOUT_S)  # see retry.backoff.ms above
        offsets = [TopicPartition(self.source_topic, self.partition, next_offset)]
        self._call(self._producer.send_offsets_to_transaction, offsets, self._metadata, _TIMEOUT_S)
        self._call(self._producer.commit_transaction, _TIMEOUT_S)
        self._open_since = None
        self.committed = max(self.committed, next_offset)
        return True

    def _read_committed(self) -> int:
        found = committed_offsets(self._group, self.source_topic, [self.partition])
        return found.get(self.partition, 0)

    def close(self) -> None:
        """Abort what is open (its records are replayed, and skipped if already out)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._open_since is not None:
            try:
                self._producer.abort_transaction(_TIMEOUT_S)
            except KafkaException as exc:
                log.warning("abort on close failed", extra={"part": self.partition, "err": exc})
            self._open_since = None
        self._producer.flush(10)
        self._group.close()
