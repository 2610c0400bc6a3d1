"""The fault suite's harness: a producer that keeps its own record of what the cluster
acknowledged, and the checks of the lake against that record.

The producer publishes generated payments at a fixed rate with the project's producer
settings (idempotent, ``acks=all``) and records, per message, when it was sent, when
(and whether) it was acknowledged, and the error of every failed delivery. That
record is the oracle: every acknowledged valid transaction must be in the lake
exactly once, whatever was killed meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from confluent_kafka import KafkaError, Message, Producer

from orchestration import platform
from orchestration.lib.webserver import graphql
from producers.kafka_loop import PRODUCER_DEFAULTS, produce_when_room
from producers.payments import GeneratorConfig, PaymentsGenerator
from riverbed import processes
from riverbed.broker import LocalCluster
from riverbed.settings import Settings
from riverbed.topics import PAYMENTS_TRANSACTIONS
from tests.support.flow_harness import (
    lake_offsets,
    query,
    read_topic,
    scan,
    start_flow,
    stop_flow,
)
from tests.support.topic_reader import valid_transaction_id


@dataclass
class Delivery:
    value: bytes
    partition: int
    timestamp_ms: int  # the message's Kafka timestamp (the flow checks event times by it)
    sent_at: float  # time.monotonic()
    done_at: float
    error: KafkaError | None
    offset: int | None  # where the delivery report says it was written (None: not said)


@dataclass
class RecordingProducer:
    """Publishes payments at ``rate`` events/s in a thread until :meth:`stop`."""

    settings: Settings
    rate: float = 300.0
    seed: int = 1
    # Long enough to ride out a leader election, short enough for a test.
    delivery_timeout_s: float = 60.0
    deliveries: list[Delivery] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    sent: int = 0

    def start(self) -> RecordingProducer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        _STARTED.append(self)
        return self

    def stop(self, flush_timeout: float = 180.0) -> None:
        """Stop sending and wait until every message sent is acknowledged or failed
        (once: later calls, from a ``finally``, do nothing)."""
        if self._stop.is_set():
            return
        self._stop.set()
        assert self._thread is not None
        self._thread.join(flush_timeout + 10)
        assert not self._thread.is_alive(), "the producer did not finish flushing"

    def _run(self) -> None:
        producer = Producer(
            {
                **self.settings.kafka_client_config(),
                **PRODUCER_DEFAULTS,
                "delivery.timeout.ms": int(self.delivery_timeout_s * 1000),
            }
        )
        generator = PaymentsGenerator(
            GeneratorConfig(), seed=self.seed, start=time.time(), rate=self.rate
        )
        began = time.monotonic()
        for event in generator:
            if self._stop.is_set():
                break
            sent_at = time.monotonic()
            # Set here, not left to the client: a failed delivery reports no timestamp,
            # and the oracle needs it to validate the event as the flow does.
            timestamp_ms = int(time.time() * 1000)

            def report(
                err: KafkaError | None,
                msg: Message,
                sent_at: float = sent_at,
                ts: int = timestamp_ms,
            ) -> None:
                self.deliveries.append(
                    Delivery(
                        msg.value(),
                        msg.partition(),
                        ts,
                        sent_at,
                        time.monotonic(),
                        err,
                        msg.offset(),
                    )
                )

            produce_when_room(
                producer,
                PAYMENTS_TRANSACTIONS,
                event.value,
                event.key,
                on_delivery=report,
                timestamp=timestamp_ms,
            )
            self.sent += 1
            producer.poll(0)
            time.sleep(max(0.0, began + self.sent / self.rate - time.monotonic()))
        assert producer.flush(120) == 0

    # --- what happened -----------------------------------------------------------------

    @property
    def acknowledged(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.error is None]

    @property
    def failed(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.error is not None]

    def acknowledged_partitions(self, after: float) -> set[int]:
        """The partitions that acknowledged a message sent at or after ``after``."""
        return {d.partition for d in self.acknowledged if d.sent_at >= after}

    def stalls(self, after: float) -> list[float]:
        """Acknowledgement latencies (s) of the messages sent at or after ``after``."""
        return sorted(d.done_at - d.sent_at for d in self.acknowledged if d.sent_at >= after)

    def recovered_at(self, after: float) -> float:
        """Seconds from ``after`` until every partition had an acknowledged message that
        was sent after ``after``: writes everywhere work again."""
        first: dict[int, float] = {}
        for d in sorted(self.acknowledged, key=lambda d: d.done_at):
            if d.sent_at >= after:
                first.setdefault(d.partition, d.done_at)
        assert first, "no message sent after the fault was acknowledged"
        return max(first.values()) - after


# Every RecordingProducer started, until stop_producing() stops it.
_STARTED: list[RecordingProducer] = []


def stop_producing() -> None:
    """Stop every RecordingProducer a test started from sending more, without waiting for
    its deliveries: a test that failed before its own ``producer.stop()`` must not leave
    a thread writing into the next test's topics (it keeps that test from ever seeing
    the flow catch up)."""
    while _STARTED:
        _STARTED.pop()._stop.set()


def valid_ids(deliveries: list[Delivery]) -> set[str]:
    """transaction_ids of the valid transactions among ``deliveries`` (the contract's
    decoder, as the flow checks them, nothing of the flow)."""
    ids = {valid_transaction_id(d.value, d.timestamp_ms) for d in deliveries}
    return {i for i in ids if i is not None}


def kill_nodes(cluster: LocalCluster, *node_ids: int) -> float:
    """kill -9 the nodes; returns when (time.monotonic()) they were killed."""
    pids = cluster.status().pids
    killed_at = time.monotonic()
    for node_id in node_ids:
        os.kill(pids[node_id], signal.SIGKILL)
    return killed_at


def check_lake_against(settings: Settings, producer: RecordingProducer) -> int:
    """Every acknowledged valid transaction is in the lake exactly once, and nothing is
    there that was not sent. Returns the number of transactions in the lake."""
    rows = query(
        f"select transaction_id, count(*) from {scan(settings, 'transactions')} group by 1"
    )
    duplicated = [(txn, n) for txn, n in rows if n > 1]
    assert duplicated == [], f"duplicated in the lake: {duplicated[:5]}"
    stored = {txn for txn, _ in rows}
    acknowledged = valid_ids(producer.acknowledged)
    missing = acknowledged - stored
    assert not missing, (
        f"{len(missing)} acknowledged transactions are not in the lake: "
        f"{where_in_topic(settings, missing, producer.acknowledged)}; the lake's next offsets "
        f"{lake_offsets(settings)}; by the lake's offsets, {lake_rows_by_partition(settings)}"
    )
    # A failed delivery may still have been written (a timeout after the write): those
    # may be there; nothing else may.
    sent = acknowledged | valid_ids(producer.failed)
    assert stored <= sent, f"{len(stored - sent)} transactions in the lake were never sent"
    return len(stored)


def where_in_topic(settings: Settings, transaction_ids: set[str], acked: list[Delivery]) -> str:
    """Where the producer was told these transactions were written and where the topic
    holds them (partition:offset), for a failure message: a loss in Kafka and a loss in
    the flow look alike from the lake."""
    told = {valid_transaction_id(d.value, d.timestamp_ms): d for d in acked}
    found: dict[str, list[str]] = {t: [] for t in transaction_ids}
    for msg in read_topic(settings, PAYMENTS_TRANSACTIONS):
        # Only valid events can be among the missing (they are acknowledged valid ones).
        txn = valid_transaction_id(msg.value(), msg.timestamp()[1])
        if txn in found:
            found[txn].append(f"{msg.partition()}:{msg.offset()}")
    return ", ".join(
        f"{t} (acknowledged at {told[t].partition}:{told[t].offset}) "
        f"in the topic at {','.join(at) or 'nowhere'}"
        for t, at in sorted(found.items())[:10]
    )


def lake_rows_by_partition(settings: Settings) -> dict[int, tuple[int, int, int]]:
    """Per partition: rows, lowest and highest offset in the lake's transactions."""
    rows = query(
        f"select _partition, count(*), min(_offset), max(_offset) "
        f"from {scan(settings, 'transactions')} group by 1 order by 1"
    )
    return {p: (n, lo, hi) for p, n, lo, hi in rows}


# What a flow that stops on its own says about why, when the reason is one it was built
# to stop for (a fenced producer, a transaction it could not complete); anything else
# (a traceback of an unexpected error) is an unclear exit.
CLEAR_REASONS = (
    "fenced, stopping: ",
    "sink failed, stopping (the flow resumes",
    "stuck past its timeout",
    "while the lake",
)


@dataclass
class Supervised:
    """The flow deployed as Dagster deploys it (`riverbed flow run`, a session of its
    own), and restarted when it exits, as Dagster's liveness sensor restarts it."""

    settings: Settings
    log: Path
    restarts: int = 0
    exits: list[str] = field(default_factory=list)
    _procs: list[subprocess.Popen] = field(default_factory=list)
    _mark: int = 0  # where in the log the current run began

    def start(self) -> Supervised:
        self._procs = start_flow(self.settings, self.log, new_session=True)
        return self

    def signal(self, signum: int) -> None:
        os.killpg(self._procs[0].pid, signum)  # the whole deployment: parent and workers

    def running(self) -> bool:
        return self._procs[0].poll() is None

    def run_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if self._procs[0].poll() is not None:
                text = self.log.read_text(errors="replace")
                self.exits.append(text[self._mark :])
                self.restarts += 1
                assert self.restarts <= 5, f"the flow kept stopping:\n{text[-3000:]}"
                self._mark = len(text)
                self.start()
            if time.monotonic() > deadline:
                tail = processes.tail(self.log, 15)
                raise AssertionError(f"timed out waiting for {what}; the flow's log ends:\n{tail}")
            time.sleep(0.5)

    def unclear_exits(self) -> list[str]:
        """The tails of the exits that do not say one of CLEAR_REASONS."""
        return [e[-2000:] for e in self.exits if not any(r in e for r in CLEAR_REASONS)]

    def stop(self) -> None:
        stop_flow(self._procs)


# --- the lake's disk ----------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``directory`` (needs root), unmounted afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True
    )
    try:
        yield directory
    finally:
        # Lazily if something (a lake reader of this process) still holds a file there.
        if subprocess.run(["umount", str(directory)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], check=True)


def fill_disk(directory: Path) -> Path:
    """Write a file into ``directory`` until its filesystem has no byte left; the file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (b"\0" * (1 << 20), b"\0" * 4096, b"\0"):
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return filler


# --- Dagster ---------------------------------------------------------------------------


@dataclass
class Dagster:
    """Dagster as ``make run`` runs it (``dagster dev``: webserver, daemon, code server),
    through :mod:`orchestration.platform`."""

    settings: Settings
    child: platform.Child | None = None

    def start(self) -> Dagster:
        self.child = platform.start_dagster(self.settings)
        return self

    def wait(self) -> None:
        assert self.child is not None
        platform.wait_for_dagster(self.settings, self.child, timeout=240)

    def processes(self) -> list[psutil.Process]:
        """Every live process of Dagster's process group (a session of its own), found as
        a flow's are: through the deployment record the platform's ``spawn`` wrote."""
        assert self.child is not None
        record = processes.read_deployment(platform.children_dir(self.settings) / "dagster")
        assert record is not None and record.pid == self.child.process.pid, record
        return processes.group_members(record)

    def kill(self) -> None:
        """kill -9 of every Dagster process, as a crash or an OOM kill of its container."""
        assert self.child is not None
        members = self.processes()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.child.process.pid, signal.SIGKILL)
        psutil.wait_procs(members, timeout=30)
        self.child.process.wait(10)
        assert self.processes() == [], "a Dagster process survived kill -9 of its group"

    def sensor_ticks(self, sensor: str, limit: int = 5) -> list[dict]:
        """The sensor's latest ticks, newest first (``timestamp``, ``status``,
        ``skipReason``, ``runIds``), from Dagster's own record of them."""
        data = graphql(
            self.settings,
            f"""{{ sensorOrError(sensorSelector: {{repositoryName: "__repository__",
                 repositoryLocationName: "riverbed", sensorName: "{sensor}"}}) {{
                   ... on Sensor {{ sensorState {{ ticks(limit: {limit}) {{
                       timestamp status skipReason runIds }} }} }} }} }}""",
        )
        return data["sensorOrError"]["sensorState"]["ticks"]
