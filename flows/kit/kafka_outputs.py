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

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import NoReturn

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from flows.kit.kafka_source import CLIENT_LOG, polled_consumer
from flows.kit.metrics import FlowMetrics
from flows.kit.records import Alert, DlqRecord
from riverbed.kafka_admin import close_polled, committed_offsets
from riverbed.settings import Settings

log = logging.getLogger("riverbed.flow.kafka")

#: What every reader of a topic written in transactions (alerts, DLQ) must set.
READ_COMMITTED = {"isolation.level": "read_committed"}

_TIMEOUT_S = 30.0
# While a partition is caught up, a transaction holding alerts is committed after the
# batch that published them (alerts are rare: a few a second at 5,000 events/s), and
# one holding only dead letters or the offset after this long, so the DLQ and the group
# offset follow within about this long (plus a source tick). While it works through a
# backlog, transactions are committed at flushes only: each commit costs ~10 ms of the
# worker's time.
MAX_OPEN_S = 0.2


# A transactional call still blocked this long after its own timeout has hit a
# librdkafka bug, not the cluster: send_offsets_to_transaction / commit_transaction
# ignore their timeout when the group coordinator's broker was decommissioned
# (a broker killed and fenced; confluentinc/librdkafka#5456 and #5511, open in
# librdkafka 2.16). The producer never recovers from it, so the process exits with
# WEDGED_EXIT and `riverbed flow run` restarts its processes, which resume from the
# last commit like after any crash.
WEDGE_GRACE_S = 30.0
WEDGED_EXIT = 75  # EX_TEMPFAIL

# How long a transactional call is retried on retriable errors before the flow gives
# up and stops (to be restarted, resuming from its last commit): longer than a
# leader election or a coordinator moving after a broker restart take.
RETRY_FOR_S = 120.0


class ProducerFenced(RuntimeError):
    """A newer instance took over this partition's transactional.id: this one must stop."""


class OutputError(RuntimeError):
    """A transaction could not be committed: the flow stops and replays rather than lose it."""


class _Watchdog:
    """Calls ``on_stuck`` when a block it guards has run longer than ``limit`` seconds.

    One thread per producer, ticking every second until :meth:`stop`. It counts only
    time the process ran: a process frozen (SIGSTOP, a suspended VM) and resumed has not
    been stuck, however late its clock now is. It holds ``on_stuck`` (a bound method)
    weakly: a thread that outlived its outputs would keep their Kafka clients alive,
    reconnecting to a broker long gone.
    """

    _TICK_S = 1.0

    def __init__(self, limit: float, on_stuck: Callable[[], None]) -> None:
        self._limit = limit
        self._on_stuck = weakref.WeakMethod(on_stuck)  # type: ignore[arg-type]
        self._stopped = threading.Event()
        self._guarding = False
        self._ran = 0.0
        threading.Thread(target=self._watch, daemon=True, name="kafka-watchdog").start()

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        self._ran = 0.0
        self._guarding = True
        try:
            yield
        finally:
            self._guarding = False

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        last = time.monotonic()
        while not self._stopped.wait(self._TICK_S):
            if self._on_stuck() is None:  # the outputs are gone, never stopped
                return
            now = time.monotonic()
            step, last = now - last, now
            if not self._guarding or step > 5 * self._TICK_S:  # longer: the process was frozen
                continue
            self._ran += step
            if self._ran > self._limit:
                on_stuck = self._on_stuck()
                if on_stuck is not None:
                    on_stuck()
                return


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
        metrics: FlowMetrics | None = None,
    ) -> None:
        self.source_topic = source_topic
        self.metrics = metrics
        self.partition = partition
        self.dlq_topic = dlq_topic
        self.alerts_topic = alerts_topic
        self.transactional_id = transactional_id(settings.consumer_group, source_topic, partition)
        self._producer = Producer(
            {
                **settings.kafka_client_config("flows"),
                "transactional.id": self.transactional_id,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "transaction.timeout.ms": int(settings.flow_transaction_timeout_s * 1000),
                # A transaction's partitions are registered with the coordinator as its
                # first records go out; librdkafka's default 100 ms retry back-off then
                # sits inside every send_offsets_to_transaction (measured: ~100 ms a
                # commit; with this and the flush in commit(), ~10 ms).
                "retry.backoff.ms": 10,
                "retry.backoff.max.ms": 100,
                # Polled after every record and flushed at every commit.
                "logger": CLIENT_LOG,
            }
        )
        # Not a group member (the source assigns partitions itself): it only gives the
        # group's metadata to send_offsets_to_transaction and reads the committed offset.
        self._group = polled_consumer(settings, **READ_COMMITTED)
        self._metadata = self._group.consumer_group_metadata()
        self._stuck_in: object = None
        self._watchdog = _Watchdog(_TIMEOUT_S + WEDGE_GRACE_S, self._wedged)
        self._checked(self._producer.init_transactions, _TIMEOUT_S)
        # init_transactions() finished or aborted whatever the previous owner left open,
        # so the committed offset is now final.
        self.committed = self._read_committed()
        self._open_since: float | None = None
        # What the open transaction holds, to publish again if it must be aborted.
        self._pending: list[tuple[str, bytes | None, bytes | None, list]] = []
        # Of those, for the metrics once they commit: DLQ records, and alerts as
        # (rule, event µs, Kafka timestamp ms of the transaction).
        self._pending_dlq = 0
        self._pending_alerts: list[tuple[str, int, int]] = []
        # The source offset after the last batch whose records were published: a commit
        # never carries an offset below it (the lake's flush thread commits while the
        # worker publishes, see flows.kit.lake_commits).
        self._published_through = 0
        # While the lake is unavailable: records are kept, not sent, and nothing commits.
        self._held = False
        # A partition's sink publishes from its worker; the process's lake flush commits
        # from its own thread (flows.kit.lake_commits): one transactional call at a time.
        self._lock = threading.RLock()

    # -- the transaction --------------------------------------------------------------

    def _call(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        """A transactional call; what librdkafka marks retriable (a coordinator loading or
        moving after a broker restart, a timeout while a leader is elected) is retried
        with backoff, for up to :data:`RETRY_FOR_S`, as librdkafka's documentation says
        the application should."""
        began = time.monotonic()
        pause = 0.1
        while True:
            try:
                self._stuck_in = fn
                with self._watchdog.guard():
                    fn(*args)
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                waited = time.monotonic() - began
                if not err.retriable() or err.fatal() or waited > RETRY_FOR_S:
                    raise
                log.warning(
                    "Kafka transaction call failed with a retriable error, retrying",
                    extra={
                        "part": self.partition,
                        "call": getattr(fn, "__name__", str(fn)),
                        "err": err.name(),
                        "waited_s": round(waited, 1),
                        "gives_up_after_s": RETRY_FOR_S,
                    },
                )
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def _checked(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        """:meth:`_call`, with what it cannot retry turned into the flow's errors."""
        try:
            self._call(fn, *args)
        except KafkaException as exc:
            self._fail(exc.args[0], exc)

    def _wedged(self) -> None:
        fn = self._stuck_in
        log.error(
            "a Kafka transaction call is stuck past its timeout (librdkafka#5511: the "
            "group coordinator's broker went away); exiting so that the flow restarts "
            "from its last commit",
            extra={
                "part": self.partition,
                "call": getattr(fn, "__name__", str(fn)),
                "stuck_s": _TIMEOUT_S + WEDGE_GRACE_S,
            },
        )
        logging.shutdown()
        os._exit(WEDGED_EXIT)

    def _fail(self, err: KafkaError, exc: KafkaException) -> NoReturn:
        if err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED) or (
            err.fatal() and "fenced" in err.str().lower()
        ):
            raise ProducerFenced(
                f"partition {self.source_topic}/{self.partition}: fenced on transactional.id "
                f"{self.transactional_id!r}: another instance of the flow took it over (a "
                "second copy is running), or the broker aborted this one's transaction after "
                "it stalled past transaction.timeout.ms (the process frozen, or the cluster "
                "without a quorum); this one stops without publishing more, and a restart "
                "resumes from the last commit"
            ) from exc
        raise OutputError(
            f"partition {self.source_topic}/{self.partition}: Kafka transaction "
            f"failed ({err.str()}); the flow stops and resumes from the last commit"
        ) from exc

    def _begin(self) -> None:
        if self._open_since is None:
            self._checked(self._producer.begin_transaction)
            self._open_since = time.monotonic()
            # Records of a transaction that was aborted (to redo it, or held while the
            # lake was unavailable) go out again first, in their order.
            for record in self._pending:
                self._send(*record)

    def publish(
        self, dlq: Iterable[DlqRecord], alerts: Iterable[Alert], through: int | None = None
    ) -> int:
        """Add records to the open transaction (opening one); how many. ``through``: the
        source offset after the batch they come from (every record before it is out)."""
        with self._lock:
            n = self._publish(dlq, alerts)
            if through is not None and through > self._published_through:
                self._published_through = through
            return n

    def _publish(self, dlq: Iterable[DlqRecord], alerts: Iterable[Alert]) -> int:
        n = 0
        for r in dlq:
            if n == 0 and not self._held:
                self._begin()
            headers = [
                ("error", r.error.encode()),
                *_headers(self.source_topic, self.partition, r.offset),
            ]
            self._produce(self.dlq_topic, r.key, r.value, headers)
            self._pending_dlq += 1
            n += 1
        for a in alerts:
            if n == 0 and not self._held:
                self._begin()
            headers = [
                ("alert.id", a.alert_id.encode()),
                *_headers(self.source_topic, self.partition, a.offset),
            ]
            self._produce(self.alerts_topic, a.key, a.payload, headers)
            self._pending_alerts.append((a.rule, a.event_us, a.produced_ms))
            n += 1
        return n

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, headers: list) -> None:
        self._pending.append((topic, key, value, headers))
        if not self._held:  # held: sent when the next transaction opens
            self._send(topic, key, value, headers)

    def _send(self, topic: str, key: bytes | None, value: bytes | None, headers: list) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:
                self._producer.poll(0.05)  # queue full: let deliveries drain
        self._producer.poll(0)

    def due(self) -> bool:
        """The open transaction should be committed now: it holds alerts, or has waited
        :data:`MAX_OPEN_S`."""
        if self._open_since is None or self._held:
            return False
        return bool(self._pending_alerts) or time.monotonic() - self._open_since >= MAX_OPEN_S

    def commit(self, next_offset: int) -> bool:
        """Commit the open transaction with the group offset ``next_offset`` (opening one
        if only the offset moved); whether anything was committed."""
        with self._lock:
            return self._commit(next_offset)

    def _commit(self, next_offset: int) -> bool:
        if self._held:
            return False  # the lake's flush releases it first (LakeCommitter)
        # Not below what the transaction's records cover: the sink's own mark may lag
        # a batch whose records were published meanwhile.
        next_offset = max(next_offset, self._published_through)
        if self._open_since is None and next_offset <= self.committed and not self._pending:
            return False
        self._begin()
        offsets = [TopicPartition(self.source_topic, self.partition, next_offset)]
        began = time.monotonic()
        while True:
            try:
                self._producer.flush(_TIMEOUT_S)  # see retry.backoff.ms above
                self._call(
                    self._producer.send_offsets_to_transaction, offsets, self._metadata, _TIMEOUT_S
                )
                self._call(self._producer.commit_transaction, _TIMEOUT_S)
                break
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if not err.txn_requires_abort() or time.monotonic() - began > RETRY_FOR_S:
                    self._fail(err, exc)
                self._redo_transaction(err)
        self._open_since = None
        if self.metrics is not None:
            self.metrics.kafka_committed(self.partition, self._pending_dlq, self._pending_alerts)
        self._forget_pending()
        self.committed = max(self.committed, next_offset)
        self._group.poll(0)  # its log lines (see polled_consumer)
        return True

    def _forget_pending(self) -> None:
        self._pending.clear()
        self._pending_dlq = 0
        self._pending_alerts = []

    def _redo_transaction(self, err: KafkaError) -> None:
        """Abort the open transaction and publish its records again in a new one.

        librdkafka's answer to an abortable error (records that timed out while too few
        brokers were up, a coordinator that lost the transaction): readers never see
        an aborted transaction's records, and this process still holds them.
        """
        log.warning(
            "Kafka transaction failed and was aborted; publishing its records again",
            extra={"part": self.partition, "err": err.str(), "records": len(self._pending)},
        )
        self._checked(self._producer.abort_transaction, _TIMEOUT_S)
        self._open_since = None
        self._begin()  # publishes the records again

    def hold(self) -> None:
        """Abort the open transaction but keep its records, and keep what is published
        from now on without sending it, until :meth:`release`: the lake is unavailable
        (:mod:`flows.kit.lake_outage`), and a transaction left open meanwhile would
        outlive ``transaction.timeout.ms``, be aborted by the broker, and get this
        producer fenced."""
        with self._lock:
            self._held = True
            if self._open_since is None:
                return
            log.info(
                "holding the open Kafka transaction's records while the lake is unavailable",
                extra={
                    "part": self.partition,
                    "records": len(self._pending),
                    # Near transaction.timeout.ms, the broker may have aborted it already.
                    "open_s": round(time.monotonic() - self._open_since, 1),
                },
            )
            # Delivered first, so that the coordinator has the transaction's partitions
            # before the abort. librdkafka 2.16 aborting while an AddPartitionsToTxn is
            # in flight ignores its response ("Ignoring outdated AddPartitionsToTxn
            # response in state BeginAbort") and sends no EndTxn ("No partitions
            # registered"), so the transaction stays open at the coordinator, which
            # aborts it after transaction.timeout.ms and bumps the epoch: the producer's
            # next transaction, after the outage, is refused as fenced (bench/hold_race.py:
            # 5 of 204 holds right after a publish on a loaded machine, none with the
            # flush). Not in _redo_transaction: it aborts because deliveries failed, so a
            # flush there would wait on them, and the transaction it opens at once would
            # join such a leftover instead of leaving it to time out.
            self._producer.flush(_TIMEOUT_S)
            self._checked(self._producer.abort_transaction, _TIMEOUT_S)
            self._open_since = None

    def release(self) -> None:
        """The lake is writable again: the next commit sends the held records."""
        with self._lock:
            self._held = False

    def _read_committed(self) -> int:
        found = committed_offsets(self._group, self.source_topic, [self.partition])
        return found.get(self.partition, 0)

    def close(self) -> None:
        """Abort what is open (its records are replayed, and skipped if already out)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        self._watchdog.stop()  # it guards only calls under way; none is, from here on
        if self._open_since is not None:
            try:
                self._producer.abort_transaction(_TIMEOUT_S)
            except KafkaException as exc:
                log.warning("abort on close failed", extra={"part": self.partition, "err": exc})
            self._open_since = None
            self._forget_pending()
        self._producer.flush(10)
        close_polled(self._group)


class OutputsInAdvance:
    """Each partition's :class:`KafkaOutputs`, started when its source partition is built.

    Making a KafkaOutputs waits for ``init_transactions()`` and the group's committed
    offset: 0.05 s on a local broker, or 0.5-1.1 s when librdkafka waits out its
    producer-id timer (the coordinator's connection not up yet). Bytewax builds a sink
    partition when its first batch arrives, in the worker thread, one after another:
    six of them in a row took 1.75 s of a one-process drain of 1M events (py-spy), with
    the worker idle. The source partition of the same Kafka partition is built first,
    all of them at start-up, on the same worker (Bytewax gives a part to a worker by
    its name, and source and sink list the same names), so :meth:`start` runs there and
    makes the outputs in a thread of their own; the sink partition :meth:`take` s them.
    Fencing keeps its order: a sink partition claims the lake only once its outputs'
    ``init_transactions()`` has returned, and an error in making them is raised by
    :meth:`take`, in the worker, as it was before.
    """

    def __init__(self, make: Callable[[int], KafkaOutputs]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._started: dict[int, Future[KafkaOutputs]] = {}

    def start(self, partition: int) -> None:
        """Begin making ``partition``'s outputs (once; a rebuilt part reuses them)."""
        with self._lock:
            if partition in self._started:
                return
            future: Future[KafkaOutputs] = Future()
            self._started[partition] = future

        def make() -> None:
            try:
                future.set_result(self._make(partition))
            except BaseException as exc:  # raised again by take(), in the worker
                future.set_exception(exc)

        threading.Thread(target=make, daemon=True, name=f"kafka-outputs-{partition}").start()

    def take(self, partition: int) -> KafkaOutputs:
        """``partition``'s outputs: the ones started, once made, or new ones."""
        with self._lock:
            future = self._started.pop(partition, None)
        return self._make(partition) if future is None else future.result()
