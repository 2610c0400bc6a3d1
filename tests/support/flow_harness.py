"""Running the real payments flow against the real broker, for the integration tests.

Input in (:func:`generate`, :func:`produce`), the topic read back as the broker
stored it (:func:`read_topic`, :func:`read_records`), the flow's processes started
and stopped exactly as a deployment runs them (:func:`start_flow`, :func:`stop_flow`,
:func:`run_until`), the consumer group's progress (:func:`end_offsets`,
:func:`committed_offsets`, :func:`drained`), and the reference alerts: the flow's
own partition logic run uninterrupted in the test process (:func:`reference_alerts`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from flows.kit import runner
from flows.kit.kafka_outputs import READ_COMMITTED
from flows.kit.records import SourceBatch
from flows.payments import settings_env
from flows.payments.config import FlowConfig
from flows.payments.processor import PartitionProcessor
from flows.payments.records import AlertRecord
from producers.kafka_loop import PRODUCER_DEFAULTS, produce_when_room
from producers.payments import GeneratedEvent, GeneratorConfig, PaymentsGenerator
from riverbed import lake
from riverbed.kafka_admin import committed_offsets as kafka_committed
from riverbed.kafka_admin import high_watermarks
from riverbed.settings import Settings
from riverbed.topics import PAYMENTS_TRANSACTIONS

REPO = Path(__file__).resolve().parents[2]

#: Events per second of event time (what the generator's 5,000 cards carry).
EVENT_RATE = 200.0

#: One message as the broker stored it: partition, offset, key, value, timestamp (ms).
Record = tuple[int, int, bytes | None, bytes | None, int]


# -- input ------------------------------------------------------------------------------


def yesterday_at(hour: int) -> float:
    """Yesterday at ``hour``:00 UTC, as a generator start.

    The generator picks each event's city by the UTC hour of its event time (a
    city is busy in its local daytime), so which fraud patterns complete within a
    few thousand events depends on the hour. A test whose oracle needs alerts in a
    short run starts at a fixed hour: the same events whenever it runs.
    """
    return (time.time() // 86_400 - 1) * 86_400 + hour * 3_600


def generate(
    n: int, seed: int, *, rate: float = EVENT_RATE, start: float | None = None
) -> list[GeneratedEvent]:
    """``n`` generated events; by default all event times in the past (none is "future"),
    the last about two minutes ago."""
    if start is None:
        start = time.time() - n / rate - 120
    generator = PaymentsGenerator(GeneratorConfig(), seed=seed, start=start, rate=rate)
    events = []
    for event in generator:
        events.append(event)
        if len(events) == n:
            return events
    raise AssertionError("generator ended early")


def produce(
    settings: Settings,
    events: Sequence[GeneratedEvent],
    *,
    timestamps_ms: Sequence[int] | None = None,
    seconds: float | None = None,
    topic: str = PAYMENTS_TRANSACTIONS,
) -> None:
    """Publish ``events`` in order, keyed by card; every one must be acknowledged.

    ``timestamps_ms``: the Kafka timestamp of each event (the broker's clock if None).
    ``seconds``: spread the sending over about this long instead of sending at once.
    """
    producer = Producer({**settings.kafka_client_config(), **PRODUCER_DEFAULTS})
    failures: list[KafkaError] = []

    def report(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(err)

    extra: dict[str, int] = {}
    began = time.monotonic()
    chunk = 1000
    for i in range(0, len(events), chunk):
        for j in range(i, min(i + chunk, len(events))):
            if timestamps_ms is not None:
                extra["timestamp"] = timestamps_ms[j]
            produce_when_room(
                producer, topic, events[j].value, events[j].key, on_delivery=report, **extra
            )
        producer.poll(0)
        if seconds is not None:
            due = began + seconds * (i + chunk) / len(events)
            time.sleep(max(0.0, due - time.monotonic()))
    assert producer.flush(60) == 0
    assert not failures, failures[:3]


# -- reading topics back ----------------------------------------------------------------


def read_topic(settings: Settings, topic: str) -> Iterator[Message]:
    """Every message of a topic, partition by partition, in offset order."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "test.readback",
            "enable.auto.commit": False,
            # The flow writes alerts and the DLQ in transactions: what a reader sees.
            **READ_COMMITTED,
        }
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, p, low)])
            # Read committed: transaction markers take offsets but are never delivered,
            # so the position, not the last message, says when the end is reached.
            while _position(consumer, topic, p) < high:
                for msg in consumer.consume(10_000, 0.1):
                    if msg.error() is not None:
                        assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                        continue
                    yield msg
            consumer.unassign()
    finally:
        consumer.close()


def _position(consumer: Consumer, topic: str, partition: int) -> int:
    return consumer.position([TopicPartition(topic, partition)])[0].offset


def read_records(settings: Settings, topic: str = PAYMENTS_TRANSACTIONS) -> list[Record]:
    """A topic as the broker stored it, as :data:`Record` tuples in (partition, offset) order."""
    return [
        (m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1])
        for m in read_topic(settings, topic)
    ]


def end_offsets(settings: Settings, topic: str = PAYMENTS_TRANSACTIONS) -> dict[int, int]:
    """Per partition: the offset the next message will get."""
    return {p: high for p, (_low, high) in high_watermarks(settings, topic).items()}


def committed_offsets(
    settings: Settings, topic: str = PAYMENTS_TRANSACTIONS, partitions: list[int] | None = None
) -> dict[int, int]:
    """Per partition (all of the topic's by default): the flow's consumer group offset."""
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": settings.consumer_group, **READ_COMMITTED}
    )
    try:
        if partitions is None:
            partitions = list(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        found = kafka_committed(consumer, topic, partitions)
        return {p: found.get(p, -1001) for p in partitions}
    finally:
        consumer.close()


def lake_offsets(
    settings: Settings,
    topic: str = PAYMENTS_TRANSACTIONS,
    events: tuple[str, str] = ("payments", "transactions"),
) -> dict[int, int]:
    """Per partition: the next offset the flow's events table (domain, dataset) holds."""
    domain, dataset = events
    if not lake.table_exists(settings.lake_dir, dataset, domain):
        return {}
    table = lake.open_table(settings.lake_dir, dataset, domain)
    return lake.stored_offsets(table, topic, range(64))


def drained(
    settings: Settings,
    topic: str = PAYMENTS_TRANSACTIONS,
    events: tuple[str, str] = ("payments", "transactions"),
) -> Callable[[], bool]:
    """A check that the flow has reached the topic's end as it is now, on both sides:
    the consumer group's offsets (the Kafka outputs) and the lake's recorded offsets."""
    ends = end_offsets(settings, topic)
    return lambda: (
        committed_offsets(settings, topic) == ends and lake_offsets(settings, topic, events) == ends
    )


def scan(settings: Settings, dataset: str) -> str:
    """A DuckDB table expression over one lake dataset of ``settings``."""
    return lake.scan_sql(settings.lake_dir, dataset)


def query(sql: str) -> list[tuple]:
    """Rows of a DuckDB query that may read the lake (``scan(...)``)."""
    con = lake.connect_duckdb()
    try:
        return con.sql(sql).fetchall()
    finally:
        con.close()


# -- running the flow -------------------------------------------------------------------


def start_flow(
    settings: Settings,
    log: Path,
    *,
    processes: int = 1,
    recovery: bool = True,
    new_session: bool = False,
    flow: str = "payments",
) -> list[subprocess.Popen]:
    """Start the flow's processes as a deployment does, their output appended to ``log``.

    ``new_session``: run ``riverbed flow run <flow>`` instead, as a process group of
    its own (the CLI and its Bytewax processes), as a terminal or a container runs it.
    """
    if recovery:
        runner.ensure_recovery_store(settings, flow)
    env = {**os.environ, **settings_env(settings)}
    log.parent.mkdir(parents=True, exist_ok=True)
    if new_session:
        argv = [sys.executable, "-m", "riverbed.cli", "flow", "run", flow]
        argv += ["--processes", str(processes)] + ([] if recovery else ["--no-recovery"])
        commands = [argv]
    else:
        commands = runner.flow_commands(settings, flow, processes=processes, recovery=recovery)
    with open(log, "ab") as out:
        return [
            subprocess.Popen(
                cmd,
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
            )
            for cmd in commands
        ]


def stop_flow(procs: Sequence[subprocess.Popen], timeout: float = 20) -> None:
    """Stop the processes cleanly (SIGINT), or kill those that do not stop in time."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def wait_exited(
    procs: Sequence[subprocess.Popen], log: Path, timeout: float, what: str
) -> list[int]:
    """The processes' exit codes once all have exited; if one still runs after
    ``timeout`` s, fail with where its flow processes are (each prints its Python
    stacks to the log on SIGUSR1, see flows.run) and the log's tail."""
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            asked = _ask_for_stacks(procs)
            time.sleep(2.0)
            raise AssertionError(
                f"{what}: still running after {timeout:.0f} s; the stacks of {asked} flow "
                f"process(es) are in the log:\n{log_tail(log, 150)}"
            ) from None
    return codes


def _ask_for_stacks(procs: Sequence[subprocess.Popen]) -> int:
    """SIGUSR1 to every ``flows.run`` process among ``procs`` and their descendants."""
    asked = 0
    for p in procs:
        try:
            family = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for member in family:
            try:
                if "flows.run" in member.cmdline():
                    member.send_signal(signal.SIGUSR1)
                    asked += 1
            except psutil.Error:
                pass
    return asked


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    procs: Sequence[subprocess.Popen],
    log: Path,
    *,
    interval: float = 0.3,
) -> None:
    """Poll ``predicate`` until true; fail (with the log's tail) on a timeout or if a
    flow process exits."""
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"flow exited ({p.returncode}):\n{log_tail(log)}")
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log_tail(log)}")
        time.sleep(interval)


def run_until(
    settings: Settings,
    done: Callable[[], bool],
    *,
    processes: int = 1,
    recovery: bool = True,
    timeout: float = 120,
    what: str = "the flow to finish",
) -> None:
    """Run the flow's processes until ``done()``, then stop them (SIGINT).

    One more flush interval passes after ``done()`` so anything still to come shows.
    """
    log = settings.home / "flow.log"
    procs = start_flow(settings, log, processes=processes, recovery=recovery)
    try:
        wait_until(done, timeout, what, procs, log)
        time.sleep(1.0)
    finally:
        stop_flow(procs)


def log_tail(log: Path, lines: int = 40, keep: Callable[[str], bool] | None = None) -> str:
    """The last ``lines`` lines of a log that ``keep`` accepts; by default all but Rust
    backtrace frames (a panic's backtrace is a hundred lines that would push the flow's
    own lines out). The whole file is read: a filter may keep few of its lines."""
    keep = keep or (lambda line: not _BACKTRACE_FRAME.match(line))
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    except OSError as exc:
        return f"(cannot read {log}: {exc})"
    return "\n".join([line for line in text.splitlines() if keep(line)][-lines:])


_BACKTRACE_FRAME = re.compile(r"\s+(\d+:\s|at\s)")


# -- the reference: the flow's partition logic, uninterrupted, in this process -------------


def reference_alerts(
    records: Sequence[Record], config: FlowConfig, chunk: int = 5000
) -> list[AlertRecord]:
    """The alerts the flow's partition processors raise over ``records``."""
    by_partition: dict[int, list[Record]] = {}
    for r in records:
        by_partition.setdefault(r[0], []).append(r)
    alerts: list[AlertRecord] = []
    for p, recs in sorted(by_partition.items()):
        processor = PartitionProcessor(p, config)
        for i in range(0, len(recs), chunk):
            part = recs[i : i + chunk]
            raw = [(o, k, v, ts) for _p, o, k, v, ts in part]
            out = processor.process(SourceBatch(p, raw, part[-1][1] + 1), 0)
            alerts.extend(out.batch.alerts)
    return alerts
