"""What every flow over one Kafka topic is made of, assembled from a :class:`StreamSpec`.

A domain's ``get_flow()`` calls :func:`open_stream` with its topics and datasets and
gets back the parts its dataflow needs: the source (one Bytewax partition per Kafka
partition, starting where the lake and the consumer group say, with the
co-partitioned table topic of a stream-table join if it has one), the partition sink
(valid events and alerts to the lake, dead letters and alerts to Kafka, fenced,
exactly once), upsert sinks for its windows and joins, the status board and the
metrics. Its own logic is a processor per partition (and any stateful steps after
it); everything here is the same for every domain.

Before anything starts, :func:`open_stream` stops the process, saying why, when
another copy of the flow runs on this ``RIVERBED_HOME`` (:mod:`flows.kit.flow_lock`)
or the lake is in the first version's format.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeVar

from flows.kit import flow_lock, runner, shutdown, start_offsets
from flows.kit.kafka_outputs import KafkaOutputs, OutputsInAdvance
from flows.kit.kafka_source import KafkaPartitionedSource, topic_partitions
from flows.kit.lake_commits import LakeCommitter, StreamDatasets
from flows.kit.lake_sink import LakePartitionedSink, LakePartitionSink
from flows.kit.metrics import FlowMetrics
from flows.kit.status import StatusBoard, status_file_name
from flows.kit.upsert_sink import UpsertSink, UpsertSinkPartition, UpsertTarget
from riverbed.logs import configure_logging
from riverbed.settings import Settings

log = logging.getLogger("riverbed.flow")

R = TypeVar("R")


@dataclass(frozen=True)
class StreamSpec:
    """A flow over one source topic: its name, its topics and its lake datasets."""

    flow: str  # the flow's name: flows/<flow>/, RIVERBED_HOME/flows/<flow>/, metrics label
    topic: str  # the source
    dlq_topic: str
    alerts_topic: str
    datasets: StreamDatasets
    # A compacted topic partitioned like the source: the table side of a stream-table
    # join, read by each source partition from its same-numbered partition.
    table_topic: str | None = None

    def prefixed(self, prefix: str) -> StreamSpec:
        """The same flow on prefixed copies of its topics (benchmarks stay off the real ones)."""
        if not prefix:
            return self
        return StreamSpec(
            flow=self.flow,
            topic=prefix + self.topic,
            dlq_topic=prefix + self.dlq_topic,
            alerts_topic=prefix + self.alerts_topic,
            datasets=self.datasets,
            table_topic=None if self.table_topic is None else prefix + self.table_topic,
        )


@dataclass
class Stream:
    """The parts of a flow over one topic (see the module's docstring)."""

    settings: Settings
    spec: StreamSpec
    partitions: list[int]
    source: KafkaPartitionedSource
    partition_sink: LakePartitionedSink
    committer: LakeCommitter
    status: StatusBoard
    metrics: FlowMetrics | None

    def upsert_sink(self, target: UpsertTarget[R]) -> UpsertSink[R]:
        """A sink upserting ``target``'s rows into the lake."""

        def make() -> UpsertSinkPartition[R]:
            partition = UpsertSinkPartition(
                target,
                lake_dir=self.settings.lake_dir,
                flush_interval_s=self.settings.flush_interval_s,
                status=self.status,
                on_outage=self.committer.hold_kafka,
            )
            # Its interval flush also runs at the partition sinks' ticks (every worker
            # reads a partition: open_stream refuses more workers than partitions).
            self.committer.on_tick(partition.flush_if_due)
            return partition

        return UpsertSink(target.dataset, make)


def open_stream(settings: Settings, spec: StreamSpec) -> Stream:
    """Take the flow's lock and build its source, sinks, status and metrics."""
    configure_logging(settings.log_level)
    shutdown.install()
    process_id = runner.process_id()
    flow_dir = runner.flow_dir(settings, spec.flow)
    try:
        flow_lock.hold(flow_dir, spec.flow, process_id)
    except flow_lock.FlowAlreadyRunning as exc:
        raise SystemExit(f"riverbed: {exc}") from None
    if (settings.lake_dir / "_manifest").exists():
        raise SystemExit(
            f"riverbed: {settings.lake_dir} is a lake of the first version (Parquet files and "
            "a manifest); this version writes Delta tables. Move it away (or delete it) and "
            f"the recovery store {runner.recovery_dir(settings, spec.flow)}, then start "
            "again: the flow rebuilds the lake from the topic"
        )
    topic = spec.topic
    events = (spec.datasets.domain, spec.datasets.events)
    try:
        partitions = topic_partitions(settings, topic)
    except RuntimeError as exc:  # the message says what to do; a traceback adds nothing
        raise SystemExit(f"riverbed: {exc}") from None
    workers = runner.worker_count()
    if workers > len(partitions):
        # Bytewax gives each partition to one worker: the others would only wait, and
        # the one among them that holds the window writes would never get a tick.
        raise SystemExit(
            f"riverbed: {workers} workers for the {len(partitions)} partitions of {topic}: "
            f"each partition is read by one worker, so run at most {len(partitions)} "
            "(riverbed flow run --processes N; bytewax.run -i/-a and -w)"
        )
    status = StatusBoard(
        flow_dir / status_file_name(process_id), flow=spec.flow, process_id=process_id
    )
    start = start_offsets.resume_offsets(settings, topic, partitions, events)
    store = runner.recovery_store()
    if store is not None:
        start.update(start_offsets.load_or_record(store, settings, topic, partitions, events))
    committer = LakeCommitter.shared(settings.lake_dir, topic, spec.datasets)
    metrics = None
    if settings.flow_metrics:
        metrics = FlowMetrics()
        metrics.serve(settings, spec.flow, process_id)
        committer.metrics = metrics

    def make_outputs(partition: int) -> KafkaOutputs:
        return KafkaOutputs(
            settings,
            source_topic=topic,
            partition=partition,
            dlq_topic=spec.dlq_topic,
            alerts_topic=spec.alerts_topic,
            metrics=metrics,
        )

    outputs = OutputsInAdvance(make_outputs)

    def make_partition(partition: int) -> LakePartitionSink:
        return LakePartitionSink(
            committer=committer,
            topic=topic,
            partition=partition,
            outputs=outputs.take(partition),
            flush_interval_s=settings.flush_interval_s,
            flush_rows=settings.flush_rows,
            status=status,
            metrics=metrics,
        )

    log.info(
        f"{spec.flow} flow",
        extra={"topic": topic, "partitions": len(partitions), "lake": str(settings.lake_dir)},
    )
    return Stream(
        settings=settings,
        spec=spec,
        partitions=partitions,
        source=KafkaPartitionedSource(
            settings,
            topic,
            partitions,
            start_offsets=start,
            table_topic=spec.table_topic,
            on_build=outputs.start,
        ),
        partition_sink=LakePartitionedSink(
            topic=topic, partitions=partitions, make_partition=make_partition
        ),
        committer=committer,
        status=status,
        metrics=metrics,
    )
