"""The IoT dataflow: iot.readings -> DLQ, anomalies, and the lake.

    riverbed flow run iot [--processes N] [--no-recovery]
    python -m bytewax.run "flows.iot:get_flow()"           # without recovery

Shape (the kit's source and sinks around this package's pure classes)::

    read (one source partition per Kafka partition; with each partition's device
          baselines from iot.device_baselines, the table side of a stream-table join)
      -> process, in the source partition (DeviceProcessor: validate, resends,
         lateness, anomaly rules, hopping windows per device; flows.kit.processing)
      -> write, on the same worker (per partition: DLQ + anomalies in a Kafka
         transaction with the group offset; readings + anomalies in the process's
         Delta commit)
      -> device windows -> upsert device_window
      -> room news -> join (one RoomJoin for the flow) -> upsert room_state

Guarantees are payments': with recovery (``riverbed flow run iot``) a crash at any
moment and a restart leave every valid reading in the lake once, every invalid one
in the DLQ once, the same anomalies, windows and room states. See
:mod:`flows.payments.flow` and :mod:`flows.kit.stream`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource
from bytewax.outputs import FixedPartitionedSink

from flows.iot.config import IotConfig
from flows.iot.processor import DeviceProcessor
from flows.iot.records import (
    DeviceWindowRow,
    IotOutput,
    RoomInput,
    RoomStateRow,
    anomalies_table,
    device_window_table,
    room_state_table,
)
from flows.iot.room_join import RoomJoin
from flows.kit import runner
from flows.kit.lake_commits import StreamDatasets
from flows.kit.metrics import FlowMetrics
from flows.kit.processing import ProcessingSource
from flows.kit.records import ProcessedBatch
from flows.kit.steps import pickled_step
from flows.kit.stream import StreamSpec, open_stream
from flows.kit.upsert_sink import Settled, UpsertTarget
from riverbed.settings import Settings, load_settings
from riverbed.topics import IOT_ANOMALIES, IOT_DEVICE_BASELINES, IOT_DLQ, IOT_READINGS

FLOW = "iot"
WINDOWS_KEY = "device_window"
ROOMS_KEY = "rooms"

SPEC = StreamSpec(
    flow=FLOW,
    topic=IOT_READINGS,
    dlq_topic=IOT_DLQ,
    alerts_topic=IOT_ANOMALIES,
    datasets=StreamDatasets(
        domain="iot", events="readings", alerts="anomalies", alerts_table=anomalies_table
    ),
    table_topic=IOT_DEVICE_BASELINES,
)


def device_window(topic: str) -> UpsertTarget[DeviceWindowRow]:
    return UpsertTarget(
        domain="iot",
        dataset="device_window",
        app=f"{topic}/device_window",
        key=lambda row: row.key,
        replaces=lambda new, held: new.reading_count >= held.reading_count,
        keep_if="s.reading_count >= t.reading_count",
        to_arrow=device_window_table,
    )


def room_state(topic: str) -> UpsertTarget[RoomStateRow]:
    return UpsertTarget(
        domain="iot",
        dataset="room_state",
        app=f"{topic}/room_state",
        key=lambda row: row.key,
        replaces=lambda new, held: True,
        keep_if=None,
        to_arrow=lambda rows: room_state_table(rows, topic),
    )


# -- the stateful step after the processors ------------------------------------------


def _join_step(partitions: list[int], config: IotConfig, metrics: FlowMetrics | None) -> Callable:
    def run(join: RoomJoin, values: list[RoomInput]) -> list[list[RoomStateRow]]:
        rows: list[RoomStateRow] = []
        before = dict(join.unmatched)
        for msg in values:
            rows.extend(join.on_input(msg))
        if metrics is not None:
            for side, n in join.unmatched.items():
                if n > before.get(side, 0):
                    metrics.unmatched(side, n - before.get(side, 0))
        if not rows:
            return []
        # Every partition idle: these are the last rows before a quiet spell, written
        # at once rather than at the end of the flush interval.
        return [Settled(rows) if join.all_idle() else rows]

    return pickled_step(
        lambda _first: RoomJoin.for_partitions(partitions, config),
        run,
        resumed=lambda j: j.configure(config),
    )


def _batch_of(out: IotOutput) -> ProcessedBatch:
    return out.batch


def _windows_of(item: tuple[str, IotOutput]) -> tuple[str, list[DeviceWindowRow]] | None:
    out = item[1]
    if not out.windows:
        return None
    # An idle partition's flush: its windows as they stand, written at once (a quiet
    # spell comes once per idle_after_s of silence per partition, so few MERGEs).
    return (WINDOWS_KEY, Settled(out.windows) if out.idle else out.windows)


def _rooms_of(item: tuple[str, IotOutput]) -> tuple[str, RoomInput] | None:
    news = item[1].rooms
    return None if news is None else (ROOMS_KEY, news)


# -- the dataflow -------------------------------------------------------------------------


def build_flow(
    *,
    config: IotConfig,
    partitions: list[int],
    source: FixedPartitionedSource,
    partition_sink: FixedPartitionedSink,
    window_sink: FixedPartitionedSink,
    room_sink: FixedPartitionedSink,
    metrics: FlowMetrics | None = None,
) -> Dataflow:
    """The dataflow over any source of SourceBatch with one part per Kafka partition
    (named ``<topic>/<partition>``, as the partition sink's) and any sinks (tests pass
    their own)."""
    flow = Dataflow(FLOW)
    # Read and processed on the worker that writes the partition (flows.kit.processing).
    processed = op.input(
        "read", flow, ProcessingSource(source, lambda p: DeviceProcessor(p, config), config)
    )
    op.output("write", op.map_value("batches", processed, _batch_of), partition_sink)
    windows = op.filter_map("device_windows", processed, _windows_of)
    op.output("write_windows", windows, window_sink)
    news = op.filter_map("room_news", processed, _rooms_of)
    rooms = op.stateful_batch("join_rooms", news, _join_step(partitions, config, metrics))
    op.output("write_rooms", rooms, room_sink)
    return flow


def get_flow(settings: Settings | None = None, *, topic_prefix: str = "") -> Dataflow:
    """The IoT flow, configured from ``RIVERBED_*`` settings (read now, not at import)."""
    settings = settings or load_settings()
    stream = open_stream(settings, SPEC.prefixed(topic_prefix))
    topic = stream.spec.topic
    return build_flow(
        config=IotConfig.from_settings(settings),
        partitions=stream.partitions,
        source=stream.source,
        partition_sink=stream.partition_sink,
        window_sink=stream.upsert_sink(device_window(topic)),
        room_sink=stream.upsert_sink(room_state(topic)),
        metrics=stream.metrics,
    )


def run_flow(settings: Settings, *, processes: int = 1, recovery: bool = True) -> int:
    """Run the flow in the foreground until it ends or is interrupted; the exit code."""
    return runner.run_flow(settings, FLOW, processes=processes, recovery=recovery)


def flow_dir(settings: Settings) -> Path:
    return runner.flow_dir(settings, FLOW)
