"""The per-Kafka-partition sink: DLQ and alerts to Kafka, rows to the lake, then offsets.

One sink partition per Kafka partition. DLQ records and alerts are published as
soon as they arrive (alert latency must not wait for a lake flush); rows are
buffered. A *flush* happens every ``flush_interval_s``, when ``flush_rows`` rows
are buffered, and in every ``snapshot()`` (Bytewax calls it at the end of each
epoch, so everything before a recovery snapshot is durable and the snapshot
itself is one timestamp). A flush, in this order:

1. waits until every published DLQ record and alert is acknowledged (raises if
   one failed: the flow stops and restarts rather than lose it);
2. writes the transactions and alerts files (temp, fsync, rename, manifest);
3. commits the consumer-group offset after the last message the flush covers,
   so ``kafka-consumer-groups`` shows lag until the lake has the data;
4. updates the status file.

Idempotence, for the replay after a crash (Bytewax re-runs from the last snapshot,
or without recovery the flow restarts from the committed offsets):

* lake rows: per (dataset, event_date) the highest offset already in a committed
  file of this partition (from file names); rows at or below it are skipped;
* DLQ and alerts: the messages of this partition written since the last flush
  before the restart are read back (by ``source.*`` and ``alert.id`` headers)
  and not published again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flows.kafka_outputs import Delivered
from flows.kafka_source import part_name, part_number
from flows.records import AlertRecord, Counts, DlqRecord, ProcessedBatch, TxnColumns
from flows.status import StatusBoard
from riverbed import lake

log = logging.getLogger("riverbed.flow.sink")

_DAY_US = 86_400_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


class Outputs(Protocol):
    """The Kafka side of a partition sink (:class:`flows.kafka_outputs.KafkaOutputs`)."""

    def produce_dlq(self, records: list[DlqRecord]) -> int: ...
    def produce_alerts(self, alerts: list[AlertRecord]) -> int: ...
    def confirm(self) -> None: ...
    def commit(self, next_offset: int, flushed_at: float) -> None: ...
    def committed_flush_time(self) -> float | None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class SinkState:
    """Recovery state: when the flush at this snapshot started (everything the sink
    publishes after the snapshot is published later than that)."""

    flushed_at: float


def _day(iso: str) -> int:
    return date.fromisoformat(iso).toordinal() - _EPOCH_ORDINAL


def txn_table(cols: TxnColumns, topic: str, partition: int) -> pa.Table:
    n = len(cols)
    return pa.Table.from_arrays(
        [
            pa.array(cols.transaction_id, pa.string()),
            pa.array(cols.card_id, pa.string()),
            pa.array(cols.merchant_id, pa.string()),
            pa.array(cols.mcc, pa.string()),
            lake.money_from_cents(cols.amount_cents),
            pa.array(cols.currency, pa.string()),
            pa.array(cols.country, pa.string()),
            pa.array(cols.lat, pa.float64()),
            pa.array(cols.lon, pa.float64()),
            pa.array(cols.channel, pa.string()),
            lake.utc_micros(cols.event_us),
            pa.array(cols.late, pa.bool_()),
            pa.repeat(pa.scalar(topic, pa.string()), n),
            pa.repeat(pa.scalar(partition, pa.int32()), n),
            pa.array(cols.offset, pa.int64()),
        ],
        schema=lake.TRANSACTIONS_SCHEMA,
    )


def alerts_table(alerts: list[AlertRecord], topic: str, partition: int) -> pa.Table:
    n = len(alerts)
    return pa.Table.from_arrays(
        [
            pa.array([a.alert_id for a in alerts], pa.string()),
            pa.array([a.rule for a in alerts], pa.string()),
            pa.array([a.card_id for a in alerts], pa.string()),
            pa.array([a.transaction_id for a in alerts], pa.string()),
            lake.utc_micros([a.event_us for a in alerts]),
            lake.utc_micros([a.detected_us for a in alerts]),
            pa.array([a.score for a in alerts], pa.float64()),
            pa.array([a.details for a in alerts], pa.string()),
            pa.repeat(pa.scalar(topic, pa.string()), n),
            pa.repeat(pa.scalar(partition, pa.int32()), n),
            pa.array([a.offset for a in alerts], pa.int64()),
        ],
        schema=lake.ALERTS_SCHEMA,
    )


class _HighWater:
    """Per event day: the last offset of this partition already in a committed file.

    Read lazily, one event_date directory at a time, the first time a row of that
    day arrives: a restart then costs a look at the days the replay touches, not
    at the whole lake. Looking at a day also rolls its newest file forward into
    the manifest if a crash came between that file's rename and its manifest line
    (the replay re-delivers that file's rows, so its day is always looked at), and
    removes this partition's temporary files a crash left there.
    """

    def __init__(self, lake_dir: Path, dataset: str, partition: int) -> None:
        self.lake_dir = lake_dir
        self.dataset = dataset
        self.partition = partition
        self.by_day: dict[int, int] = {}

    def mark(self, day: int) -> int:
        mark = self.by_day.get(day)
        if mark is None:
            event_date = date.fromordinal(day + _EPOCH_ORDINAL).isoformat()
            mark, newest = lake.high_water_of_date(
                self.lake_dir, self.dataset, self.partition, event_date
            )
            rolled = lake.roll_forward_files(self.lake_dir, self.dataset, newest)
            lake.remove_temp_files(
                self.lake_dir, self.dataset, f"p{self.partition:02d}-", event_dates=[event_date]
            )
            if rolled:
                log.warning(
                    "added a missing manifest line",
                    extra={"dataset": self.dataset, "files": [f.path for f in rolled]},
                )
            self.by_day[day] = mark
        return mark

    def new_rows(self, offsets: list[int], event_us: list[int]) -> list[int] | None:
        """Indices of the rows not yet in the lake; None when that is all of them."""
        days = [t // _DAY_US for t in event_us]
        marks = {d: self.mark(d) for d in set(days)}
        if offsets[0] > max(marks.values()):
            return None  # offsets grow within a batch: the common case, past the lake
        return [i for i, (o, d) in enumerate(zip(offsets, days, strict=True)) if o > marks[d]]

    def committed(self, files: list[lake.CommittedFile]) -> None:
        for f in files:
            day = _day(f.path.split("event_date=", 1)[1][:10])
            self.by_day[day] = max(self.mark(day), f.ranges[0].last_offset)


class LakePartitionSink(StatefulSinkPartition[ProcessedBatch, SinkState]):
    def __init__(
        self,
        *,
        lake_dir: Path,
        topic: str,
        partition: int,
        outputs: Outputs,
        load_delivered: Callable[[float | None], Delivered],
        flush_interval_s: float,
        flush_rows: int,
        status: StatusBoard | None,
        resume_state: SinkState | None,
        since: float | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.key = part_name(topic, partition)
        self.outputs = outputs
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self.status = status
        self.writer = lake.LakeWriter(lake_dir)
        for dataset in ("transactions", "alerts"):
            self.writer.ensure_dataset(dataset)
        self.high_water = {
            ds: _HighWater(Path(lake_dir), ds, partition) for ds in ("transactions", "alerts")
        }
        # Messages this sink published after this moment may be published again by
        # the replay; ``since`` says where a replay without a snapshot starts.
        if resume_state is not None:
            self._since: float | None = resume_state.flushed_at
        elif since is not None:
            self._since = since
        else:
            self._since = outputs.committed_flush_time()
        self._load_delivered = load_delivered
        self._delivered: Delivered | None = None
        self._txns = TxnColumns()
        self._alerts: list[AlertRecord] = []
        self._counts = Counts()
        self._covered_next: int | None = None
        self._committed: int | None = None
        self._caught_up = False
        self._last_flush = time.monotonic()
        self._flushed_at = time.time()

    # -- Bytewax ---------------------------------------------------------------------
    def write_batch(self, values: list[ProcessedBatch]) -> None:
        for batch in values:
            self._take(batch)
        if (
            len(self._txns) >= self.flush_rows
            or time.monotonic() - self._last_flush >= self.flush_interval_s
        ):
            self.flush()

    def snapshot(self) -> SinkState:
        self.flush()
        return SinkState(self._flushed_at)

    def close(self) -> None:
        self.flush()
        self.outputs.close()

    # -- logic -----------------------------------------------------------------------
    def _take(self, batch: ProcessedBatch) -> None:
        if batch.dlq or batch.alerts:
            delivered = self._delivered_already()
            dlq = [r for r in batch.dlq if r.offset not in delivered.dlq_offsets]
            self.outputs.produce_dlq(dlq)
            fresh = [a for a in batch.alerts if a.alert_id not in delivered.alert_ids]
            self.outputs.produce_alerts(fresh)
            if batch.alerts:
                keep = self.high_water["alerts"].new_rows(
                    [a.offset for a in batch.alerts], [a.event_us for a in batch.alerts]
                )
                self._alerts.extend(
                    batch.alerts if keep is None else [batch.alerts[i] for i in keep]
                )
        txns = batch.txns
        if len(txns):
            keep = self.high_water["transactions"].new_rows(txns.offset, txns.event_us)
            self._txns.extend(txns if keep is None else txns.take(keep))
        self._counts.add(batch.counts)
        self._caught_up = batch.caught_up
        if self._covered_next is None or batch.next_offset > self._covered_next:
            self._covered_next = batch.next_offset

    def _delivered_already(self) -> Delivered:
        if self._delivered is None:
            self._delivered = self._load_delivered(self._since)
            if self._delivered.dlq_offsets or self._delivered.alert_ids:
                log.info(
                    "skipping messages already published",
                    extra={
                        "part": self.partition,
                        "dlq": len(self._delivered.dlq_offsets),
                        "alerts": len(self._delivered.alert_ids),
                    },
                )
        return self._delivered

    def flush(self) -> None:
        started = time.time()
        began = time.monotonic()
        self.outputs.confirm()
        files: dict[str, int] = {}
        rows: dict[str, int] = {}
        if len(self._txns):
            written = self.writer.write_partition_rows(
                "transactions",
                txn_table(self._txns, self.topic, self.partition),
                topic=self.topic,
                partition=self.partition,
            )
            self.high_water["transactions"].committed(written)
            files["transactions"], rows["transactions"] = len(written), len(self._txns)
            self._txns = TxnColumns()
        if self._alerts:
            written = self.writer.write_partition_rows(
                "alerts",
                alerts_table(self._alerts, self.topic, self.partition),
                topic=self.topic,
                partition=self.partition,
            )
            self.high_water["alerts"].committed(written)
            files["alerts"], rows["alerts"] = len(written), len(self._alerts)
            self._alerts = []
        if self._covered_next is not None and self._covered_next != self._committed:
            self.outputs.commit(self._covered_next, started)
            self._committed = self._covered_next
        if self.status is not None:  # every flush: updated_at doubles as a heartbeat
            self.status.record_flush(
                partition_key=self.key,
                counts=self._counts,
                files=files,
                rows=rows,
                committed_offset=self._committed,
                caught_up=self._caught_up,
            )
        log.debug(
            "flushed",
            extra={
                "part": self.partition,
                "rows": rows,
                "ms": round((time.monotonic() - began) * 1000),
            },
        )
        self._counts = Counts()
        self._last_flush = time.monotonic()
        self._flushed_at = started


class LakePartitionedSink(FixedPartitionedSink[ProcessedBatch, SinkState]):
    """Routes each processed batch to the sink partition of its Kafka partition."""

    def __init__(
        self,
        *,
        topic: str,
        partitions: list[int],
        make_partition: Callable[[int, SinkState | None], LakePartitionSink],
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

    def build_part(
        self, step_id: str, for_part: str, resume_state: SinkState | None
    ) -> LakePartitionSink:
        return self._make(part_number(for_part), resume_state)
