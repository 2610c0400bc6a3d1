"""Upserted datasets: rows MERGEd into a Delta table by key (windows, join results).

A flow's windows (payments' ``merchant_minute``, IoT's ``device_window``) and join
results (IoT's ``room_state``) come out of stateful steps, not straight from one
source partition, so they are not skipped by offset on a replay: they are upserted,
and a replay that emits a row again rewrites it in place. An :class:`UpsertTarget`
says which table, how a row is keyed, and when a row may replace a stored one (for
windows: one with at least as many events, so a replay never moves a window back).

Each target gets its own sink with one partition (the step before it is a single
stateful key, or its rows are few). Rows are buffered (a later row of a key replaces
an earlier one if the target allows it) and flushed every interval and in every
snapshot. A flush is one Delta MERGE on the target's key columns
(:data:`riverbed.lake.MERGE_KEYS`). Rows arrive now and then (windows when they
close), so the interval is also checked at every tick of the process's partition
sinks (:meth:`UpsertSinkPartition.flush_if_due`, from
:meth:`flows.kit.lake_commits.LakeCommitter.on_tick`): the last rows before a quiet
spell are written within an interval and a tick, not at the next recovery snapshot;
rows the step before marks :class:`Settled` (the stream went quiet) are written at once.

Fencing: a sink takes the table over when it starts, by committing the next
generation of the application transaction ``target.app`` (the newest writer wins, as
with Kafka's ``init_transactions``), and each MERGE records that generation again; an
older writer's next MERGE finds a generation it did not write and is refused
(:class:`riverbed.lake.FencedWriter`): that copy stops.

A MERGE that fails on the lake's storage (a full disk) is retried with the same rows
until it succeeds; meanwhile the process's Kafka transactions are held
(:mod:`flows.kit.lake_outage`). A MERGE is idempotent, so one that landed before a
later step failed is harmless to repeat.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flows.kit.fencing import reported
from flows.kit.lake_outage import until_written
from flows.kit.status import StatusBoard
from riverbed import lake

log = logging.getLogger("riverbed.flow.upserts")

R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True)
class UpsertTarget(Generic[R]):
    """An upserted dataset: where it is, and how its rows are keyed and compared."""

    domain: str
    dataset: str
    app: str  # the application transaction that carries the writer's generation
    key: Callable[[R], Hashable]
    # Whether a new row of a key may replace one already held (buffered or stored).
    replaces: Callable[[R, R], bool]
    keep_if: str | None  # the same, as a MERGE condition on source s and target t
    to_arrow: Callable[[list[R]], pa.Table]


class Settled(list):
    """Rows after which no more are expected soon (every partition went quiet and the
    step before emitted what it held): the sink writes them at once, not at the end of
    its interval. A quiet spell comes at most once per ``idle_after_s`` of silence, so
    this adds few commits."""


class UpsertSinkPartition(StatefulSinkPartition[list[R], None], Generic[R]):
    def __init__(
        self,
        target: UpsertTarget[R],
        *,
        lake_dir: Path,
        flush_interval_s: float,
        status: StatusBoard | None,
        on_outage: Callable[[], object] | None = None,
    ) -> None:
        self.target = target
        self.flush_interval_s = flush_interval_s
        self.status = status
        self.lake_dir = Path(lake_dir)
        self.on_outage = on_outage
        self.writer = self._written(
            lambda: lake.TableWriter(self.lake_dir, target.dataset, target.domain), "open"
        )
        self._written(lambda: self.writer.take_over([target.app]), "take over")
        self._rows: dict[Hashable, R] = {}
        self._last_flush = time.monotonic()
        # flush_if_due comes from the partition sinks' worker, which may be another
        # thread than this sink's (a process with several workers).
        self._lock = threading.Lock()

    def write_batch(self, values: list[list[R]]) -> None:
        with reported(), self._lock:
            self._write_batch(values)

    def snapshot(self) -> None:
        with reported(), self._lock:
            self.flush()

    def close(self) -> None:
        with reported(), self._lock:
            self.flush()

    def flush_if_due(self) -> None:
        """Flush what is held if the interval since the last flush has passed."""
        with self._lock:
            if self._rows and time.monotonic() - self._last_flush >= self.flush_interval_s:
                self.flush()

    def _write_batch(self, values: list[list[R]]) -> None:
        replaces = self.target.replaces
        settled = False
        for rows in values:
            settled = settled or isinstance(rows, Settled)
            for row in rows:
                key = self.target.key(row)
                held = self._rows.get(key)
                if held is None or replaces(row, held):
                    self._rows[key] = row
        if settled or time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        rows = list(self._rows.values())
        table = self.target.to_arrow(rows)
        commit = self._written(
            lambda: self.writer.upsert(table, {}, keep_if=self.target.keep_if), "merge"
        )
        log.debug(
            "rows upserted",
            extra={
                "dataset": self.target.dataset,
                "rows": len(rows),
                "version": commit.version,
                "ms": round(commit.seconds * 1000),
            },
        )
        if self.status is not None:
            self.status.record_flush(
                partition_key=None,
                counts=None,
                commits={self.target.dataset: 1},
                rows={self.target.dataset: len(rows)},
                committed_offset=None,
            )
        self._rows = {}

    def _written(self, write: Callable[[], T], what: str) -> T:
        return until_written(
            write,
            lake_dir=self.lake_dir,
            what=f"{self.target.dataset}: {what}",
            on_outage=self.on_outage,
        )


class UpsertSink(FixedPartitionedSink[list[R], None], Generic[R]):
    """The Bytewax sink of one upserted dataset (one partition, named after it)."""

    def __init__(self, dataset: str, make_partition: Callable[[], UpsertSinkPartition[R]]) -> None:
        self._part = dataset
        self._make = make_partition

    def list_parts(self) -> list[str]:
        return [self._part]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> UpsertSinkPartition[R]:
        return self._make()
