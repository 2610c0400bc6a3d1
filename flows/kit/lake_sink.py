"""The per-Kafka-partition sink: DLQ and alerts to Kafka, rows to the lake.

One sink partition per Kafka partition. DLQ records and alerts go into the
partition's open Kafka transaction as soon as they arrive, and while the partition is
caught up the transaction is committed (with the consumer group's offset) after the
batch when it holds alerts, else within about
:data:`flows.kit.kafka_outputs.MAX_OPEN_S`: alert latency does not wait for the lake.
While it works through a backlog, the transaction is committed at flushes only.
Rows are staged in the process's :class:`~flows.kit.lake_commits.LakeCommitter`.

A *flush* happens every ``flush_interval_s`` (counted for the whole process: the first
partition to see it due flushes for all), when ``flush_rows`` rows are staged, when
the process's partitions caught up at the end of a backlog, and in
every ``snapshot()`` (Bytewax calls it at the end of each epoch, so everything
before a recovery snapshot is durable). The interval and row-count flushes run behind
the worker, on the committer's thread (:meth:`LakeCommitter.flush_behind`); the
snapshot's runs in place. A flush, in this order:

1. commits the staged rows of every partition of the process, one Delta commit per
   dataset, with each partition's next offset as an application transaction (a
   stale copy's commit is refused by the writer generations); while the lake's
   storage refuses writes (a full disk) it waits and retries, committing nothing
   (:mod:`flows.kit.lake_outage`);
2. commits the Kafka transaction of every partition of the process with the group
   offset after the last message it covers (a fenced instance fails here);
3. updates the status file.

Idempotence, for the replay after a crash (Bytewax re-runs from its last snapshot;
without recovery the flow restarts from the lake's and the group's offsets, whichever
is older): a row whose offset is below its dataset's committed Delta version is
already in the lake; a DLQ record or alert whose offset is below the group's committed
offset is already in its topic. Both are skipped. Nothing is read back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flows.kit.fencing import reported
from flows.kit.kafka_source import part_name, part_number
from flows.kit.lake_commits import LakeCommitter
from flows.kit.metrics import FlowMetrics
from flows.kit.records import Alert, Counts, DlqRecord, ProcessedBatch
from flows.kit.status import StatusBoard
from riverbed import lake

log = logging.getLogger("riverbed.flow.sink")


class Outputs(Protocol):
    """The Kafka side of a partition sink (:class:`flows.kit.kafka_outputs.KafkaOutputs`)."""

    committed: int  # the group offset: outputs of records before it are published

    def publish(
        self, dlq: list[DlqRecord], alerts: list[Alert], through: int | None = None
    ) -> int: ...
    def due(self) -> bool: ...
    def commit(self, next_offset: int) -> bool: ...
    def hold(self) -> None: ...
    def release(self) -> None: ...
    def close(self) -> None: ...


def _from(offsets: list[int], first: int) -> list[int] | None:
    """Indices of the offsets at or after ``first``; None when that is all of them."""
    if not offsets or offsets[0] >= first:
        return None  # offsets grow within a batch: the common case, past the mark
    return [i for i, o in enumerate(offsets) if o >= first]


class LakePartitionSink(StatefulSinkPartition[ProcessedBatch, None]):
    def __init__(
        self,
        *,
        committer: LakeCommitter,
        topic: str,
        partition: int,
        outputs: Outputs,
        flush_interval_s: float,
        flush_rows: int,
        status: StatusBoard | None,
        metrics: FlowMetrics | None = None,
    ) -> None:
        self.topic = topic
        self.metrics = metrics
        self.partition = partition
        self.key = part_name(topic, partition)
        self.committer = committer
        self.outputs = outputs
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self.status = status
        # Where each side already is: the replay skips everything before.
        self.lake_next = committer.claim(
            partition, self._commit_kafka, outputs.hold, outputs.release
        )
        self.kafka_next = outputs.committed
        if self.kafka_next or any(self.lake_next.values()):
            log.info(
                "resuming partition",
                extra={"part": partition, "lake": self.lake_next, "kafka": self.kafka_next},
            )
        self._counts = Counts()
        self._covered_next: int | None = None
        self._caught_up = False
        # Duplicates dropped since the last flush, of batches past the point the lake
        # had reached at start (earlier ones were counted before the restart).
        self._resent = 0

    # -- Bytewax ---------------------------------------------------------------------
    def write_batch(self, values: list[ProcessedBatch]) -> None:
        began = time.monotonic()
        with reported():
            self._write_batch(values)
        if self.metrics is not None:
            self.metrics.write_batch_seconds.observe(time.monotonic() - began)

    def snapshot(self) -> None:
        with reported():
            self.flush()

    def close(self) -> None:
        with reported():
            self.flush()
            self.outputs.close()
            self.committer.release(self.partition)

    def _write_batch(self, values: list[ProcessedBatch]) -> None:
        for batch in values:
            self._take(batch)
        if self.committer.due(self.flush_interval_s, self.flush_rows):
            self.flush(behind=True)
        elif self._covered_next is not None and self._caught_up and self.outputs.due():
            # Live: alerts out after their batch, the rest within ~MAX_OPEN_S. Behind: only
            # at flushes (throughput).
            self.outputs.commit(self._covered_next)
        self.committer.tick()  # the process's upsert sinks: their interval flush

    # -- logic -----------------------------------------------------------------------
    def _take(self, batch: ProcessedBatch) -> None:
        first_new = self.kafka_next
        dlq = [r for r in batch.dlq if r.offset >= first_new]
        fresh = [a for a in batch.alerts if a.offset >= first_new]
        if dlq or fresh:
            self.outputs.publish(dlq, fresh, through=batch.next_offset)
        datasets = self.committer.datasets
        rows = batch.rows
        event_rows = produced = None
        if len(rows):
            keep = _from(rows.offset, self.lake_next[datasets.events])
            if keep is not None:
                rows = rows.take(keep)
            if len(rows):
                event_rows = rows.to_arrow(self.topic, self.partition)
                if self.metrics is not None:
                    produced = pa.array(rows.produced_ms, pa.int64())
        alert_rows = None
        if batch.alerts:
            keep = _from([a.offset for a in batch.alerts], self.lake_next[datasets.alerts])
            alerts = batch.alerts if keep is None else [batch.alerts[i] for i in keep]
            if alerts:
                alert_rows = datasets.alerts_table(alerts, self.topic, self.partition)
        self._counts.add(batch.counts)
        if self.metrics is not None:
            if len(batch.rows):
                self.metrics.saw_events(self.partition, max(batch.rows.event_us))
            if batch.next_offset - batch.counts.processed >= self.lake_next[datasets.events]:
                self._resent += batch.counts.resent
        self._caught_up = batch.caught_up
        if self._covered_next is None or batch.next_offset > self._covered_next:
            self._covered_next = batch.next_offset
        self.committer.stage(
            self.partition,
            batch.next_offset,
            event_rows,
            alert_rows,
            produced,
            caught_up=batch.caught_up,
            backlog=batch.backlog,
        )

    def _commit_kafka(self) -> None:
        if self._covered_next is not None:
            self.outputs.commit(self._covered_next)

    def flush(self, *, behind: bool = False) -> None:
        """Commit what the process staged (:class:`LakeCommitter`), then record it in the
        status board. ``behind``: on the committer's thread, while this worker goes on
        (a Bytewax snapshot or a close flushes in place, after any flush still behind)."""
        began = time.monotonic()
        counts, self._counts = self._counts, Counts()
        if self.metrics is not None:
            self.metrics.resent(self.partition, self._resent)
            self._resent = 0
        if behind:
            self.committer.flush_behind(lambda commits: self._flushed(commits, counts, began))
        else:
            self._flushed(self.committer.flush(), counts, began)

    def _flushed(self, commits: list[lake.Commit], counts: Counts, began: float) -> None:
        if self.status is not None:  # every flush: updated_at doubles as a heartbeat
            self.status.record_flush(
                partition_key=self.key,
                counts=counts,
                commits={c.dataset: 1 for c in commits},
                rows={c.dataset: c.rows for c in commits},
                committed_offset=self.outputs.committed if self._covered_next is not None else None,
                caught_up=self._caught_up,
            )
        if commits:
            log.debug(
                "flushed",
                extra={
                    "part": self.partition,
                    "commits": {c.dataset: c.version for c in commits},
                    "ms": round((time.monotonic() - began) * 1000),
                },
            )


class LakePartitionedSink(FixedPartitionedSink[ProcessedBatch, None]):
    """Routes each processed batch to the sink partition of its Kafka partition."""

    def __init__(
        self,
        *,
        topic: str,
        partitions: list[int],
        make_partition: Callable[[int], LakePartitionSink],
    ) -> None:
        self._names = sorted(part_name(topic, p) for p in partitions)
        self._index = {name: i for i, name in enumerate(self._names)}
        self._make = make_partition

    def list_parts(self) -> list[str]:
        return list(self._names)

    def part_fn(self, item_key: str) -> int:
        # Bytewax indexes this into the sorted list of all parts: route each
        # Kafka partition's batches to the part of the same name.
        return self._index[item_key]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> LakePartitionSink:
        # Building a partition talks to Kafka (fencing, the group's committed offset): a
        # cluster that does not answer in time stops the flow, saying why, like any sink call.
        with reported():
            return self._make(part_number(for_part))
