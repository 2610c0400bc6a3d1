"""The merchant_minute sink: final window rows into the lake, without duplicates.

The window merger is a single stateful step, so this sink has one partition.
Rows are buffered and flushed like the partition sinks (interval, and every
snapshot). A replay after a crash emits rows again; a row whose
(merchant_id, window_start, revision) is already in a committed file is
skipped. Which keys are committed is read from the lake lazily: only files
whose window range (in the file name, ``mm-<first>-<last>-<id>.parquet``, unix
seconds of window_start) reaches the oldest window being written.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flows.records import MerchantMinuteRow
from flows.status import StatusBoard
from riverbed import lake

log = logging.getLogger("riverbed.flow.windows")

DATASET = "merchant_minute"
PART = "merchant_minute"
PREFIX = "mm-"
_NAME = re.compile(r"^mm-(\d+)-(\d+)-[0-9a-f]+\.parquet$")
_US = 1_000_000


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
            pa.array([r.revision for r in rows], pa.int32()),
        ],
        schema=lake.MERCHANT_MINUTE_SCHEMA,
    )


def _date_of(us: int) -> str:
    return datetime.fromtimestamp(us // _US, UTC).date().isoformat()


def _file_name(table: pa.Table) -> str:
    starts = pc.cast(table.column("window_start"), pa.int64())
    first = pc.min(starts).as_py() // _US
    last = pc.max(starts).as_py() // _US
    return f"{PREFIX}{first:010d}-{last:010d}-{uuid.uuid4().hex[:12]}.parquet"


class WindowSinkPartition(StatefulSinkPartition[list[MerchantMinuteRow], None]):
    def __init__(
        self,
        *,
        lake_dir: Path,
        flush_interval_s: float,
        retention_us: int,
        status: StatusBoard | None,
    ) -> None:
        self.lake_dir = Path(lake_dir)
        self.flush_interval_s = flush_interval_s
        self.retention_us = retention_us
        self.status = status
        self.writer = lake.LakeWriter(self.lake_dir)
        self.writer.ensure_dataset(DATASET)
        self._committed: set[tuple[str, int, int]] = set()
        self._loaded_from_us: int | None = None  # keys of windows from here on are loaded
        self._newest_us = 0
        self._rows: list[MerchantMinuteRow] = []
        self._last_flush = time.monotonic()

    def write_batch(self, values: list[list[MerchantMinuteRow]]) -> None:
        for rows in values:
            if not rows:
                continue
            self._load_keys(min(r.window_start_us for r in rows))
            for row in rows:
                key = row.key
                if key in self._committed:
                    continue
                self._committed.add(key)
                self._rows.append(row)
                self._newest_us = max(self._newest_us, row.window_start_us)
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def snapshot(self) -> None:
        self.flush()

    def close(self) -> None:
        self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        written = self.writer.write_rows(DATASET, rows_table(self._rows), name_for=_file_name)
        if self.status is not None:
            self.status.record_flush(
                partition_key=None,
                counts=None,
                files={DATASET: len(written)},
                rows={DATASET: len(self._rows)},
                committed_offset=None,
            )
        self._rows = []
        self._forget_old_keys()

    def _load_keys(self, from_us: int) -> None:
        """Make sure the committed keys of windows starting at ``from_us`` or later are known.

        The files read are also checked against the manifest (a crash between a
        file's rename and its manifest line leaves it unlisted): a replay re-emits
        that file's rows, so its windows are always among those looked at here.
        """
        if self._loaded_from_us is not None and from_us >= self._loaded_from_us:
            return
        upto = self._loaded_from_us  # already loaded from here on
        first_date = _date_of(from_us)
        last_date = None if upto is None else _date_of(upto)
        read = []
        for path in lake.committed_files(self.lake_dir, DATASET, since=first_date):
            match = _NAME.match(path.name)
            day = path.parent.name.split("=", 1)[1]
            if match is None or (last_date is not None and day > last_date):
                continue
            first, last = int(match[1]) * _US, int(match[2]) * _US
            if last < from_us or (upto is not None and first >= upto):
                continue
            read.append(path)
            table = pq.read_table(path, columns=["merchant_id", "window_start", "revision"])
            starts = pc.cast(table.column("window_start"), pa.int64()).to_pylist()
            for merchant, start, rev in zip(
                table.column("merchant_id").to_pylist(),
                starts,
                table.column("revision").to_pylist(),
                strict=True,
            ):
                self._committed.add((merchant, start, rev))
        rolled = lake.roll_forward_files(self.lake_dir, DATASET, read)
        if rolled:
            log.warning("added missing manifest lines", extra={"files": [f.path for f in rolled]})
        dates = {p.parent.name.split("=", 1)[1] for p in read}
        lake.remove_temp_files(self.lake_dir, DATASET, PREFIX, event_dates=dates)
        self._loaded_from_us = from_us

    def _forget_old_keys(self) -> None:
        # The merger never emits windows older than its correction retention behind
        # the newest; keys that old cannot come back.
        horizon = self._newest_us - 2 * self.retention_us
        if self._loaded_from_us is None or horizon <= self._loaded_from_us:
            return
        self._committed = {k for k in self._committed if k[1] >= horizon}
        self._loaded_from_us = horizon


class WindowSink(FixedPartitionedSink[list[MerchantMinuteRow], None]):
    def __init__(self, make_partition: Callable[[], WindowSinkPartition]) -> None:
        self._make = make_partition

    def list_parts(self) -> list[str]:
        return [PART]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> WindowSinkPartition:
        return self._make()
