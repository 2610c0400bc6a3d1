"""The payments dataflow: payments.transactions -> DLQ, alerts, and the lake.

    riverbed flow run payments [--processes N] [--no-recovery]         # run_flow()

which runs (see :func:`flow_commands`), after ``python -m bytewax.recovery <store> 2``
the first time::

    python -m flows.run "flows.payments:get_flow()" \
        -r <flows_dir>/payments/recovery -s <flush interval, whole s> -b 0 [-i I -a ADDRS]

(``flows.run`` is ``bytewax.run`` with Ctrl-C and SIGTERM handled from its first
instant, see :mod:`flows.kit.shutdown`). ``python -m bytewax.run "flows.payments:get_flow()"``
alone runs it without recovery.

Shape (a thin Bytewax layer over pure classes)::

    read (one source partition per Kafka partition, micro-batches + ticks, with each
          partition's card profiles from payments.card_profiles, the table side of a
          stream-table join)
      -> process, in the source partition (PartitionProcessor: validate, resends,
         fraud, lateness, window deltas; flows.kit.processing)
      -> write, on the same worker (per Kafka partition: DLQ + alerts in a Kafka
         transaction with the group offset; transactions + alerts staged for the
         process's Delta commit)
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
(:mod:`flows.kit.flow_lock`); one elsewhere is fenced by the Kafka transactions and the
Delta versions (:mod:`flows.kit.kafka_outputs`, :mod:`riverbed.lake`).

Status: every flush rewrites ``<flows_dir>/payments/status.json`` (one process) or
``status-<process id>.json`` (each process of a ``-i/-a`` cluster); see
:mod:`flows.kit.status`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource
from bytewax.outputs import FixedPartitionedSink

from flows.kit import runner
from flows.kit.lake_commits import StreamDatasets
from flows.kit.processing import ProcessingSource
from flows.kit.records import ProcessedBatch
from flows.kit.steps import pickled_step
from flows.kit.stream import StreamSpec, open_stream
from flows.kit.upsert_sink import Settled, UpsertTarget
from flows.payments.config import FlowConfig
from flows.payments.processor import PartitionProcessor
from flows.payments.records import (
    MerchantMinuteRow,
    MergerInput,
    ProcessorOutput,
    alerts_table,
    merchant_minute_table,
)
from flows.payments.windows import WindowMerger
from riverbed.settings import Settings, load_settings
from riverbed.topics import (
    PAYMENTS_ALERTS,
    PAYMENTS_CARD_PROFILES,
    PAYMENTS_DLQ,
    PAYMENTS_TRANSACTIONS,
)

log = logging.getLogger("riverbed.flow")

FLOW = "payments"
WINDOWS_KEY = "merchant_minute"


def flow_dir(settings: Settings) -> Path:
    return runner.flow_dir(settings, FLOW)


def recovery_dir(settings: Settings) -> Path:
    return runner.recovery_dir(settings, FLOW)


# -- the stateful step after the processors ------------------------------------------


def _merge_step(partitions: list[int], config: FlowConfig) -> Callable:
    def run(merger: WindowMerger, values: list[MergerInput]) -> list[list[MerchantMinuteRow]]:
        rows: list[MerchantMinuteRow] = []
        for msg in values:
            rows.extend(merger.on_input(msg))
        if not rows:
            return []
        # Every partition idle: these close the last windows, written at once.
        return [Settled(rows) if merger.all_idle() else rows]

    return pickled_step(lambda _first: WindowMerger.for_partitions(partitions, config), run)


def _window_news(item: tuple[str, ProcessorOutput]) -> tuple[str, MergerInput] | None:
    news = item[1].merger
    return None if news is None else (WINDOWS_KEY, news)


def _batch_of(out: ProcessorOutput) -> ProcessedBatch:
    return out.batch


# -- the dataflow -------------------------------------------------------------------------


def build_flow(
    *,
    config: FlowConfig,
    partitions: list[int],
    source: FixedPartitionedSource,
    partition_sink: FixedPartitionedSink,
    window_sink: FixedPartitionedSink,
) -> Dataflow:
    """The dataflow over any source of SourceBatch with one part per Kafka partition
    (named ``<topic>/<partition>``, as the partition sink's) and any sinks (tests pass
    their own)."""
    flow = Dataflow(FLOW)
    # Read and processed on the worker that writes the partition (flows.kit.processing).
    processed = op.input(
        "read",
        flow,
        ProcessingSource(source, lambda p: PartitionProcessor(p, config), config),
    )
    op.output("write", op.map_value("batches", processed, _batch_of), partition_sink)
    news = op.filter_map("window_news", processed, _window_news)
    rows = op.stateful_batch("merge_windows", news, _merge_step(partitions, config))
    op.output("write_windows", rows, window_sink)
    return flow


SPEC = StreamSpec(
    flow=FLOW,
    topic=PAYMENTS_TRANSACTIONS,
    dlq_topic=PAYMENTS_DLQ,
    alerts_topic=PAYMENTS_ALERTS,
    datasets=StreamDatasets(
        domain="payments", events="transactions", alerts="alerts", alerts_table=alerts_table
    ),
    # The card profiles, joined by card: a profile topic partitioned like the
    # transactions holds the profiles of the cards of the same-numbered partition.
    table_topic=PAYMENTS_CARD_PROFILES,
)


def merchant_minute(topic: str) -> UpsertTarget[MerchantMinuteRow]:
    """The merchant_minute table: a window's row is replaced only by one at least as full,
    so a replay after a crash, which emits windows again, never moves one back."""
    return UpsertTarget(
        domain="payments",
        dataset="merchant_minute",
        app=f"{topic}/windows",
        key=lambda row: row.key,
        replaces=lambda new, held: new.txn_count >= held.txn_count,
        keep_if="s.txn_count >= t.txn_count",
        to_arrow=merchant_minute_table,
    )


def get_flow(settings: Settings | None = None, *, topic_prefix: str = "") -> Dataflow:
    """The payments flow, configured from ``RIVERBED_*`` settings (read now, not at import).

    ``topic_prefix`` reads and writes prefixed copies of the payments topics (benchmarks
    use it to stay off the real ones). Stops at once, saying why, when another copy of
    the flow runs on this ``RIVERBED_HOME`` or the lake is in the old format.
    """
    settings = settings or load_settings()
    stream = open_stream(settings, SPEC.prefixed(topic_prefix))
    topic = stream.spec.topic
    return build_flow(
        config=FlowConfig.from_settings(settings),
        partitions=stream.partitions,
        source=stream.source,
        partition_sink=stream.partition_sink,
        window_sink=stream.upsert_sink(merchant_minute(topic)),
    )


# -- running it ---------------------------------------------------------------------------


def flow_commands(
    settings: Settings,
    *,
    processes: int = 1,
    recovery: bool = True,
    ports: list[int] | None = None,
    topic_prefix: str = "",
) -> list[list[str]]:
    """The command line of each flow process (one per process)."""
    return runner.flow_commands(
        settings,
        FLOW,
        processes=processes,
        recovery=recovery,
        ports=ports,
        topic_prefix=topic_prefix,
    )


def ensure_recovery_store(settings: Settings) -> Path:
    return runner.ensure_recovery_store(settings, FLOW)


def run_flow(settings: Settings, *, processes: int = 1, recovery: bool = True) -> int:
    """Run the flow in the foreground until it ends or is interrupted; the exit code."""
    return runner.run_flow(settings, FLOW, processes=processes, recovery=recovery)


settings_env = runner.settings_env
snapshot_interval_s = runner.snapshot_interval_s
