"""The merchant_minute sink: window rows upserted into the lake's Delta table.

The window merger is a single stateful step, so this sink has one partition. Rows
are buffered (a later row of a window replaces an earlier one) and flushed like the
partition sinks: every interval and in every snapshot. A flush is one Delta MERGE on
(``event_date``, ``merchant_id``, ``window_start``): a new window is inserted, a
window corrected by late data is updated in place. Counts of a window only grow, so
the MERGE replaces a stored row only by one with at least as many transactions: a
replay after a crash, which emits windows again, never moves a window back.

Fencing: a sink takes the table over when it starts, by committing the next
generation of the application transaction ``<topic>/windows`` (the newest writer
wins, as with Kafka's ``init_transactions``), and each MERGE records that generation
again; an older writer's next MERGE finds a generation it did not write and is
refused (:class:`riverbed.lake.FencedWriter`): that copy stops.

A MERGE that fails on the lake's storage (a full disk) is retried with the same rows
until it succeeds; meanwhile the process's Kafka transactions are held
(:mod:`flows.lake_outage`). A MERGE is idempotent, so one that landed before a later
step failed is harmless to repeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flows.fencing import reported
from flows.lake_outage import until_written
from flows.records import MerchantMinuteRow
from flows.status import StatusBoard
from riverbed import lake

log = logging.getLogger("riverbed.flow.windows")

DATASET = "merchant_minute"
PART = "merchant_minute"
# A stored window is replaced only by a row at least as full.
KEEP_IF = "s.txn_count >= t.txn_count"

T = TypeVar("T")


def windows_app_id(topic: str) -> str:
    return f"{topic}/windows"


def rows_table(rows: list[MerchantMinuteRow]) -> pa.Table:
    return pa.Table.from_arrays(
        [
            pa.array([r.merchant_id for r in rows], pa.string()),
            lake.utc_micros([r.window_start_us for r in rows]),
            lake.utc_micros([r.window_end_us for r in rows]),
            pa.array([r.txn_count for r in rows], pa.int64()),
            lake.money_from_cents([r.sum_cents for r in rows]),
            lake.money_from_cents([r.min_cents for r in rows]),
            lake.money_from_cents([r.max_cents for r in rows]),
            pa.array([r.mean for r in rows], pa.float64()),
            pa.array([r.distinct_cards for r in rows], pa.int64()),
            pa.array([r.alert_count for r in rows], pa.int64()),
        ],
        schema=lake.MERCHANT_MINUTE_SCHEMA,
    )


class WindowSinkPartition(StatefulSinkPartition[list[MerchantMinuteRow], None]):
    def __init__(
        self,
        *,
        lake_dir: Path,
        topic: str,
        flush_interval_s: float,
        status: StatusBoard | None,
        on_outage: Callable[[], object] | None = None,
    ) -> None:
        self.flush_interval_s = flush_interval_s
        self.status = status
        self.app = windows_app_id(topic)
        self.lake_dir = Path(lake_dir)
        self.on_outage = on_outage
        self.writer = self._written(lambda: lake.TableWriter(self.lake_dir, DATASET), "open")
        self._written(lambda: self.writer.take_over([self.app]), "take over")
        self._rows: dict[tuple[str, int], MerchantMinuteRow] = {}
        self._last_flush = time.monotonic()

    def write_batch(self, values: list[list[MerchantMinuteRow]]) -> None:
        with reported():
            self._write_batch(values)

    def snapshot(self) -> None:
        with reported():
            self.flush()

    def close(self) -> None:
        with reported():
            self.flush()

    def _write_batch(self, values: list[list[MerchantMinuteRow]]) -> None:
        for rows in values:
            for row in rows:
                key = (row.merchant_id, row.window_start_us)
                held = self._rows.get(key)
                if held is None or row.txn_count >= held.txn_count:
                    self._rows[key] = row
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        rows = list(self._rows.values())
        table = rows_table(rows)
        commit = self._written(
            lambda: self.writer.upsert(table, {}, keep_if=KEEP_IF), "merge windows"
        )
        log.debug(
            "windows upserted",
            extra={
                "rows": len(rows),
                "version": commit.version,
                "ms": round(commit.seconds * 1000),
            },
        )
        if self.status is not None:
            self.status.record_flush(
                partition_key=None,
                counts=None,
                commits={DATASET: 1},
                rows={DATASET: len(rows)},
                committed_offset=None,
            )
        self._rows = {}

    def _written(self, write: Callable[[], T], what: str) -> T:
        return until_written(
            write, lake_dir=self.lake_dir, what=f"{DATASET}: {what}", on_outage=self.on_outage
        )


class WindowSink(FixedPartitionedSink[list[MerchantMinuteRow], None]):
    def __init__(self, make_partition: Callable[[], WindowSinkPartition]) -> None:
        self._make = make_partition

    def list_parts(self) -> list[str]:
        return [PART]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> WindowSinkPartition:
        return self._make()
