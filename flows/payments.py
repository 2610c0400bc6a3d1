"""The payments dataflow: payments.transactions -> DLQ, alerts, and the lake.

    riverbed flow run payments [--processes N] [--no-recovery]         # run_flow()

which runs (see :func:`flow_commands`), after ``python -m bytewax.recovery <store> 2``
the first time::

    python -m flows.run "flows.payments:get_flow()" \
        -r <flows_dir>/payments/recovery -s <flush interval, whole s> -b 0 [-i I -a ADDRS]

(``flows.run`` is ``bytewax.run`` with Ctrl-C and SIGTERM handled from its first
instant, see :mod:`flows.shutdown`). ``python -m bytewax.run "flows.payments:get_flow()"``
alone runs it without recovery.

Shape (a thin Bytewax layer over pure classes)::

    read (one source partition per Kafka partition, micro-batches + ticks)
      -> key by Kafka partition
      (with each partition's card profiles from payments.card_profiles, the table side
       of a stream-table join)
      -> process (PartitionProcessor: validate, resends, fraud, lateness, window deltas)
      -> write (per Kafka partition: DLQ + alerts in a Kafka transaction with the group
         offset; transactions + alerts staged for the process's Delta commit)
      -> merge windows (one WindowMerger for the flow) -> upsert merchant_minute

Guarantees need recovery: :func:`run_flow` runs with a recovery store under
``<flows_dir>/payments/recovery`` (created on first use). Then a crash at any
moment and a restart leave every valid transaction in the lake once, every
invalid message in the DLQ once, the same alerts, and the same windows.
Without recovery the flow restarts from the offsets the lake's Delta log and the
consumer group hold (lake, DLQ and alerts stay exactly-once: each sink skips what
its side already has) but loses its in-memory state: windows open at the crash
miss the events before it, fraud and resend history start empty.

One copy at a time: a second copy on the same ``RIVERBED_HOME`` stops at start
(:mod:`flows.flow_lock`); one elsewhere is fenced by the Kafka transactions and the
Delta versions (:mod:`flows.kafka_outputs`, :mod:`riverbed.lake`).

Status: every flush rewrites ``<flows_dir>/payments/status.json`` (one process) or
``status-<process id>.json`` (each process of a ``-i/-a`` cluster); see
:mod:`flows.status`.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import FixedPartitionedSink

from flows import flow_lock, shutdown, start_offsets
from flows.config import FlowConfig
from flows.kafka_outputs import WEDGED_EXIT, KafkaOutputs
from flows.kafka_source import KafkaPartitionedSource, part_name, topic_partitions
from flows.lake_commits import LakeCommitter
from flows.lake_sink import LakePartitionedSink, LakePartitionSink
from flows.metrics import FlowMetrics
from flows.processor import PartitionProcessor
from flows.records import (
    MerchantMinuteRow,
    MergerInput,
    ProcessedBatch,
    ProcessorOutput,
    SourceBatch,
)
from flows.status import StatusBoard, status_file_name
from flows.window_sink import WindowSink, WindowSinkPartition
from flows.windows import WindowMerger
from riverbed.logs import configure_logging
from riverbed.settings import Settings, load_settings
from riverbed.topics import (
    PAYMENTS_ALERTS,
    PAYMENTS_CARD_PROFILES,
    PAYMENTS_DLQ,
    PAYMENTS_TRANSACTIONS,
)

log = logging.getLogger("riverbed.flow")

FLOW = "payments"
RECOVERY_PARTITIONS = 2  # fixed: the same store works for any number of processes
WINDOWS_KEY = "merchant_minute"
_STOP_GRACE_S = 30.0  # after SIGINT, how long processes get before SIGKILL
_WEDGED_RESTARTS = 5  # restarts of processes stuck on a librdkafka bug, then give up


def flow_dir(settings: Settings) -> Path:
    return settings.flows_dir / FLOW


def recovery_dir(settings: Settings) -> Path:
    return flow_dir(settings) / "recovery"


# -- the stateful steps ----------------------------------------------------------------


def _now_us() -> int:
    return time.time_ns() // 1000


class _ProcessLogic(StatefulBatchLogic[SourceBatch, ProcessorOutput, bytes]):
    """Bytewax glue around one PartitionProcessor.

    Snapshots are the pickled processor (bytes are immutable), not the
    ``copy.deepcopy`` that ``stateful_map`` would make: that is several times
    slower for the card state.
    """

    def __init__(self, config: FlowConfig, processor: PartitionProcessor | None) -> None:
        self.config = config
        self.processor = processor

    def on_batch(self, values: list[SourceBatch]) -> tuple[list[ProcessorOutput], bool]:
        if self.processor is None:
            self.processor = PartitionProcessor(values[0].partition, self.config)
        now = _now_us()
        return [self.processor.process(v, now) for v in values], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        began = time.monotonic()
        blob = pickle.dumps(self.processor, protocol=pickle.HIGHEST_PROTOCOL)
        log.debug(
            "snapshot",
            extra={"bytes": len(blob), "ms": round((time.monotonic() - began) * 1000)},
        )
        return blob


def _process_builder(config: FlowConfig) -> Callable[[bytes | None], _ProcessLogic]:
    def build(resume: bytes | None) -> _ProcessLogic:
        if resume is None:
            return _ProcessLogic(config, None)
        processor: PartitionProcessor = pickle.loads(resume)
        processor.configure(config)
        return _ProcessLogic(config, processor)

    return build


class _MergeLogic(StatefulBatchLogic[MergerInput, list[MerchantMinuteRow], bytes]):
    def __init__(self, merger: WindowMerger) -> None:
        self.merger = merger

    def on_batch(self, values: list[MergerInput]) -> tuple[list[list[MerchantMinuteRow]], bool]:
        rows: list[MerchantMinuteRow] = []
        for msg in values:
            rows.extend(self.merger.on_input(msg))
        return ([rows] if rows else []), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.merger, protocol=pickle.HIGHEST_PROTOCOL)


def _merge_builder(
    partitions: list[int], config: FlowConfig
) -> Callable[[bytes | None], _MergeLogic]:
    def build(resume: bytes | None) -> _MergeLogic:
        if resume is None:
            return _MergeLogic(WindowMerger.for_partitions(partitions, config))
        return _MergeLogic(pickle.loads(resume))

    return build


def _window_news(item: tuple[str, ProcessorOutput]) -> tuple[str, MergerInput] | None:
    news = item[1].merger
    return None if news is None else (WINDOWS_KEY, news)


def _batch_of(out: ProcessorOutput) -> ProcessedBatch:
    return out.batch


# -- the dataflow -------------------------------------------------------------------------


def build_flow(
    *,
    config: FlowConfig,
    topic: str,
    partitions: list[int],
    source: FixedPartitionedSource,
    partition_sink: FixedPartitionedSink,
    window_sink: FixedPartitionedSink,
) -> Dataflow:
    """The dataflow over any source of SourceBatch and any sinks (tests pass their own)."""
    flow = Dataflow(FLOW)
    batches = op.input("read", flow, source)
    keyed = op.key_on("by_partition", batches, lambda b: part_name(topic, b.partition))
    processed = op.stateful_batch("process", keyed, _process_builder(config))
    op.output("write", op.map_value("batches", processed, _batch_of), partition_sink)
    news = op.filter_map("window_news", processed, _window_news)
    rows = op.stateful_batch("merge_windows", news, _merge_builder(partitions, config))
    op.output("write_windows", rows, window_sink)
    return flow


def _bytewax_option(short: str, long: str, env: str) -> str | None:
    """An option bytewax.run was given (``-x V``, ``--long V``, ``--long=V``) or its env var."""
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg in (short, long) and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"{long}="):
            return arg.split("=", 1)[1]
    return os.environ.get(env) or None


def _recovery_store() -> Path | None:
    """The recovery directory bytewax.run was given (-r), if any."""
    value = _bytewax_option("-r", "--recovery-directory", "BYTEWAX_RECOVERY_DIRECTORY")
    return Path(value) if value else None


def _process_id() -> int | None:
    """This process's index in a multi-process run (bytewax.run's -i), else None."""
    value = _bytewax_option("-i", "--process-id", "BYTEWAX_PROCESS_ID")
    return int(value) if value else None


def get_flow(settings: Settings | None = None, *, topic_prefix: str = "") -> Dataflow:
    """The payments flow, configured from ``RIVERBED_*`` settings (read now, not at import).

    ``topic_prefix`` reads and writes prefixed copies of the payments topics (benchmarks
    use it to stay off the real ones). Stops at once, saying why, when another copy of
    the flow runs on this ``RIVERBED_HOME`` or the lake is in the old format.
    """
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    shutdown.install()
    try:
        flow_lock.hold(flow_dir(settings), FLOW, _process_id())
    except flow_lock.FlowAlreadyRunning as exc:
        raise SystemExit(f"riverbed: {exc}") from None
    if (settings.lake_dir / "_manifest").exists():
        raise SystemExit(
            f"riverbed: {settings.lake_dir} is a lake of the first version (Parquet files and "
            "a manifest); this version writes Delta tables. Move it away (or delete it) and "
            f"the recovery store {recovery_dir(settings)}, then start again: the flow "
            "rebuilds the lake from the topic"
        )
    config = FlowConfig.from_settings(settings)
    topic = topic_prefix + PAYMENTS_TRANSACTIONS
    dlq_topic = topic_prefix + PAYMENTS_DLQ
    alerts_topic = topic_prefix + PAYMENTS_ALERTS
    partitions = topic_partitions(settings, topic)
    status = StatusBoard(
        flow_dir(settings) / status_file_name(_process_id()), flow=FLOW, process_id=_process_id()
    )
    lake_dir = settings.lake_dir
    start = start_offsets.resume_offsets(settings, topic, partitions)
    store = _recovery_store()
    if store is not None:
        start.update(start_offsets.load_or_record(store, settings, topic, partitions))
    committer = LakeCommitter.shared(lake_dir, topic)
    metrics = None
    if settings.flow_metrics:
        metrics = FlowMetrics()
        metrics.serve(settings, FLOW, _process_id())
        committer.metrics = metrics

    def make_partition(partition: int) -> LakePartitionSink:
        outputs = KafkaOutputs(
            settings,
            source_topic=topic,
            partition=partition,
            dlq_topic=dlq_topic,
            alerts_topic=alerts_topic,
            metrics=metrics,
        )
        return LakePartitionSink(
            committer=committer,
            topic=topic,
            partition=partition,
            outputs=outputs,
            flush_interval_s=settings.flush_interval_s,
            flush_rows=settings.flush_rows,
            status=status,
            metrics=metrics,
        )

    def make_window_partition() -> WindowSinkPartition:
        return WindowSinkPartition(
            lake_dir=lake_dir,
            topic=topic,
            flush_interval_s=settings.flush_interval_s,
            status=status,
            on_outage=committer.hold_kafka,
        )

    log.info("payments flow", extra={"partitions": len(partitions), "lake": str(lake_dir)})
    return build_flow(
        config=config,
        topic=topic,
        partitions=partitions,
        # The card profiles, joined by card: a profile topic partitioned like the
        # transactions holds the profiles of the cards of the same-numbered partition.
        source=KafkaPartitionedSource(
            settings,
            topic,
            partitions,
            start_offsets=start,
            table_topic=topic_prefix + PAYMENTS_CARD_PROFILES,
        ),
        partition_sink=LakePartitionedSink(
            topic=topic, partitions=partitions, make_partition=make_partition
        ),
        window_sink=WindowSink(make_window_partition),
    )


# -- running it ---------------------------------------------------------------------------


def snapshot_interval_s(settings: Settings) -> int:
    """Bytewax epochs (and so recovery snapshots, and forced flushes) every this many s."""
    return max(1, round(settings.flush_interval_s))


def ensure_recovery_store(settings: Settings) -> Path:
    """Create the recovery store on first use (``python -m bytewax.recovery <dir> <n>``)."""
    directory = recovery_dir(settings)
    if not any(directory.glob("part-*.sqlite3")):
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "bytewax.recovery", str(directory), str(RECOVERY_PARTITIONS)],
            check=True,
        )
    return directory


def flow_commands(
    settings: Settings,
    *,
    processes: int = 1,
    recovery: bool = True,
    ports: list[int] | None = None,
    topic_prefix: str = "",
) -> list[list[str]]:
    """The command line of each flow process (one per process)."""
    target = (
        f"flows.payments:get_flow(topic_prefix={topic_prefix!r})"
        if topic_prefix
        else ("flows.payments:get_flow()")
    )
    # flows.run is bytewax.run with the stop signals handled from its first instant.
    base = [sys.executable, "-m", "flows.run", target]
    if recovery:
        base += [
            "-r",
            str(recovery_dir(settings)),
            "-s",
            str(snapshot_interval_s(settings)),
            "-b",
            "0",
        ]
    if processes <= 1:
        return [base]
    ports = ports or _free_ports(processes)
    addresses = ";".join(f"127.0.0.1:{p}" for p in ports)
    return [[*base, "-i", str(i), "-a", addresses] for i in range(processes)]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_flow(settings: Settings, *, processes: int = 1, recovery: bool = True) -> int:
    """Run the flow in the foreground until it ends or is interrupted; the exit code.

    Settings reach the processes through the environment (``RIVERBED_*``), so the
    children see exactly what this process was given.
    """
    if recovery:
        ensure_recovery_store(settings)
    flow_dir(settings).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings_env(settings)}
    cwd = Path(__file__).resolve().parent.parent
    children: list[subprocess.Popen] = []
    stopping_since: list[float] = []
    asked_to_stop: list[float] = []

    def forward(_signum: int, _frame: object) -> None:
        stopping_since.append(time.monotonic())
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)  # the flow stops cleanly (flows.shutdown)

    def on_signal(signum: int, frame: object) -> None:
        # Forwarded even when the signal reached the whole group (Ctrl-C): a child
        # takes the same stop arriving twice as one, and one that was still starting
        # (signals ignored until flows.run installs its handlers) gets it now.
        asked_to_stop.append(time.monotonic())
        if not stopping_since:
            forward(signum, frame)

    def launch() -> None:
        children.clear()
        for cmd in flow_commands(settings, processes=processes, recovery=recovery):
            children.append(
                subprocess.Popen(cmd, env=env, cwd=cwd, preexec_fn=_ignore_stop_signals)
            )
            if stopping_since:
                forward(signal.SIGINT, None)

    # Before the children start: a stop asked for from now on reaches them.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    restarts = 0
    try:
        launch()
        while True:
            codes = [c.poll() for c in children]
            if all(code is not None for code in codes):
                if asked_to_stop:
                    return 0  # stopped on request (Ctrl-C, SIGTERM): a clean end
                if WEDGED_EXIT in codes and restarts < _WEDGED_RESTARTS:
                    # A Kafka client stuck on a librdkafka bug (see flows.kafka_outputs):
                    # start afresh from the last commit, as after any crash.
                    restarts += 1
                    log.warning(
                        "restarting the flow's processes after a stuck Kafka client",
                        extra={"restart": restarts, "of": _WEDGED_RESTARTS},
                    )
                    stopping_since.clear()
                    launch()
                    continue
                return max(abs(code) for code in codes if code is not None)
            now = time.monotonic()
            if any(code not in (None, 0) for code in codes) and not stopping_since:
                # One process failed: the cluster cannot go on without it.
                forward(signal.SIGINT, None)
            if stopping_since and now - stopping_since[0] > _STOP_GRACE_S:
                for child in children:
                    if child.poll() is None:
                        child.kill()
            time.sleep(0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _ignore_stop_signals() -> None:
    # Until flows.run installs the flow's own handlers (its first statement), a Ctrl-C
    # to the process group must not interrupt the child's start; this process forwards
    # the stop to it once it runs (see run_flow).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as RIVERBED_* variables, for a child process."""
    return settings.to_env()
