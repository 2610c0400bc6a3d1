"""The lake: one Delta Lake table per dataset, written with delta-rs (``deltalake``).

Layout (a contract: dbt, polars and anyone with a Delta reader read it)::

    <lake>/<domain>/<dataset>/_delta_log/…              the table's transaction log
    <lake>/<domain>/<dataset>/event_date=YYYY-MM-DD/…   Parquet data files

Every table is partitioned by ``event_date`` (the UTC date of ``event_time``, or of
``window_start`` for ``merchant_minute``). The log is the truth: a file that is not
in it does not exist for any reader, so a writer killed mid-write leaves nothing a
reader sees (``vacuum`` removes the orphan).

Exactly-once, as delta-io's kafka-delta-ingest does it: a commit that holds rows read
from Kafka also records, as Delta *application transactions*, the next offset to read
of every source topic-partition it covers (app id ``<topic>/<partition>``, version =
that offset), in the same atomic commit. A restarted writer reads those versions and
skips what is already there. delta-rs does not refuse a commit whose version is not
newer than the stored one, so :class:`TableWriter` checks before every commit that
the stored versions are still the ones it last saw: if another writer moved them, this
one is stale (a second copy of a flow, or a zombie) and raises :class:`FencedWriter`.
Two writers racing past that check both carry a ``txn`` action for the same app id,
which delta-rs's conflict checker rejects for the later one: that is fenced too.

Nothing here knows about Bytewax or Kafka clients; the flows drive it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction

from riverbed.contracts.iot import METRICS

log = logging.getLogger("riverbed.lake")

DEFAULT_DOMAIN = "payments"
PARTITION_COLUMN = "event_date"

TS = pa.timestamp("us", tz="UTC")
MONEY = pa.decimal128(18, 2)

_OFFSET_FIELDS = [
    pa.field("_topic", pa.string()),
    pa.field("_partition", pa.int32()),
    pa.field("_offset", pa.int64()),
]

TRANSACTIONS_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string()),
        pa.field("card_id", pa.string()),
        pa.field("merchant_id", pa.string()),
        pa.field("mcc", pa.string()),
        pa.field("amount", MONEY),
        pa.field("currency", pa.string()),
        pa.field("country", pa.string()),
        pa.field("lat", pa.float64()),
        pa.field("lon", pa.float64()),
        pa.field("channel", pa.string()),
        pa.field("event_time", TS),
        pa.field("late", pa.bool_()),
        *_OFFSET_FIELDS,
    ]
)

ALERTS_SCHEMA = pa.schema(
    [
        pa.field("alert_id", pa.string()),
        pa.field("rule", pa.string()),
        pa.field("card_id", pa.string()),
        pa.field("transaction_id", pa.string()),
        pa.field("event_time", TS),
        pa.field("detected_at", TS),
        pa.field("score", pa.float64()),
        pa.field("details", pa.string()),
        *_OFFSET_FIELDS,
    ]
)

# One row per (merchant_id, window_start): a late correction is an upsert.
MERCHANT_MINUTE_SCHEMA = pa.schema(
    [
        pa.field("merchant_id", pa.string()),
        pa.field("window_start", TS),
        pa.field("window_end", TS),
        pa.field("txn_count", pa.int64()),
        pa.field("amount_sum", MONEY),
        pa.field("amount_min", MONEY),
        pa.field("amount_max", MONEY),
        pa.field("amount_mean", pa.float64()),
        pa.field("distinct_cards", pa.int64()),
        pa.field("alert_count", pa.int64()),
    ]
)

# IoT: lake/iot/<dataset>. A reading's measurements are null where the device
# does not measure them.
READINGS_SCHEMA = pa.schema(
    [
        pa.field("reading_id", pa.string()),
        pa.field("device_id", pa.string()),
        pa.field("room_id", pa.string()),
        pa.field("event_time", TS),
        pa.field("temperature_c", pa.float64()),
        pa.field("humidity_pct", pa.float64()),
        pa.field("light_lux", pa.float64()),
        pa.field("co2_ppm", pa.float64()),
        pa.field("late", pa.bool_()),
        *_OFFSET_FIELDS,
    ]
)

ANOMALIES_SCHEMA = pa.schema(
    [
        pa.field("anomaly_id", pa.string()),
        pa.field("rule", pa.string()),
        pa.field("device_id", pa.string()),
        pa.field("room_id", pa.string()),
        pa.field("reading_id", pa.string()),
        pa.field("metric", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("event_time", TS),
        pa.field("detected_at", TS),
        pa.field("score", pa.float64()),
        pa.field("details", pa.string()),
        *_OFFSET_FIELDS,
    ]
)

# Hopping windows per device, one row per (device_id, window_start); upserted.
# Per measurement: its readings' count, mean, min and max in the window (null: none).
DEVICE_WINDOW_SCHEMA = pa.schema(
    [
        pa.field("device_id", pa.string()),
        pa.field("room_id", pa.string()),
        pa.field("window_start", TS),
        pa.field("window_end", TS),
        pa.field("reading_count", pa.int64()),
        *(
            pa.field(f"{metric}_{stat}", pa.int64() if stat == "count" else pa.float64())
            for metric in METRICS
            for stat in ("count", "mean", "min", "max")
        ),
    ]
)

# The interval join of a room's sensors: one row per reading that carries CO2 (the
# anchor), with the room's nearest light and humidity readings within the join's
# interval of it (null: none matched), and the occupancy derived from them.
ROOM_STATE_SCHEMA = pa.schema(
    [
        pa.field("room_id", pa.string()),
        pa.field("reading_id", pa.string()),
        pa.field("device_id", pa.string()),
        pa.field("event_time", TS),
        pa.field("co2_ppm", pa.float64()),
        pa.field("light_lux", pa.float64()),
        pa.field("humidity_pct", pa.float64()),
        pa.field("light_lag_s", pa.float64()),
        pa.field("humidity_lag_s", pa.float64()),
        pa.field("occupied", pa.bool_()),
        *_OFFSET_FIELDS,
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "transactions": TRANSACTIONS_SCHEMA,
    "alerts": ALERTS_SCHEMA,
    "merchant_minute": MERCHANT_MINUTE_SCHEMA,
    "readings": READINGS_SCHEMA,
    "anomalies": ANOMALIES_SCHEMA,
    "device_window": DEVICE_WINDOW_SCHEMA,
    "room_state": ROOM_STATE_SCHEMA,
}

# The column whose UTC date is a row's event_date partition.
PARTITION_TIME_COLUMN: dict[str, str] = {
    "transactions": "event_time",
    "alerts": "event_time",
    "merchant_minute": "window_start",
    "readings": "event_time",
    "anomalies": "event_time",
    "device_window": "window_start",
    "room_state": "event_time",
}

# The columns that identify a row of an upserted dataset.
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "merchant_minute": (PARTITION_COLUMN, "merchant_id", "window_start"),
    "device_window": (PARTITION_COLUMN, "device_id", "window_start"),
    "room_state": (PARTITION_COLUMN, "room_id", "reading_id"),
}

# Table properties every Riverbed table is created with. Commit latency must not grow
# with the table's age, and what a commit costs grows with three things: the JSON
# commits since the last checkpoint (replayed), the entries of ``_delta_log`` (a writer
# lists the directory on every refresh and commit) and the tombstones of removed files
# (carried in the table state and in every checkpoint). Measured with deltalake 1.6.6
# (bench/lake_bench.py commits): with 12 h of log and a day of tombstones, an append's
# p99 grew 2.3x over 10,000 commits; with both bounded to an hour it stays flat once the
# table is an hour old. So: a checkpoint every 100 commits, log entries dropped at
# checkpoint time once older than an hour (time travel further back is not offered; dbt's
# agg_merchant_hourly then recomputes every date once), tombstones dropped after an hour.
# Dropping a tombstone does not delete its file: ``vacuum`` lists the directory and
# keeps unreferenced files for ``lake_vacuum_retention_h`` (24 h), which must outlast
# the longest read.
LOG_RETENTION_S = 3600
TOMBSTONE_RETENTION_S = 3600
TABLE_PROPERTIES: dict[str, str] = {
    "delta.checkpointInterval": "100",
    "delta.logRetentionDuration": f"interval {LOG_RETENTION_S} seconds",
    "delta.enableExpiredLogCleanup": "true",
    "delta.deletedFileRetentionDuration": f"interval {TOMBSTONE_RETENTION_S} seconds",
}

# Retries of a commit that lost a race it may retry (an upsert against a compaction).
_CONFLICT_RETRIES = 8


class FencedWriter(RuntimeError):
    """Another writer committed offsets (or a generation) this writer did not expect."""


# ---------------------------------------------------------------------------------
# paths and tables
# ---------------------------------------------------------------------------------


def dataset_dir(lake_dir: Path, dataset: str, domain: str = DEFAULT_DOMAIN) -> Path:
    return Path(lake_dir) / domain / dataset


def table_schema(dataset: str) -> pa.Schema:
    """The dataset's columns plus its ``event_date`` partition column."""
    return SCHEMAS[dataset].append(pa.field(PARTITION_COLUMN, pa.date32()))


def app_id(topic: str, partition: int) -> str:
    """The Delta application-transaction id of one source topic-partition's offsets."""
    return f"{topic}/{partition}"


def writer_app_id(topic: str, partition: int) -> str:
    """The application-transaction id of the generation of one partition's writer."""
    return f"{topic}/{partition}/writer"


def open_table(lake_dir: Path, dataset: str, domain: str = DEFAULT_DOMAIN) -> DeltaTable:
    """The dataset's table, created (empty, with :data:`TABLE_PROPERTIES`) if missing."""
    path = dataset_dir(lake_dir, dataset, domain)
    try:
        return DeltaTable(path)
    except TableNotFoundError:
        pass
    path.mkdir(parents=True, exist_ok=True)
    try:
        return DeltaTable.create(
            path,
            schema=table_schema(dataset),
            mode="ignore",  # another process created it first: take theirs
            partition_by=[PARTITION_COLUMN],
            name=f"{domain}.{dataset}",
            configuration=TABLE_PROPERTIES,
        )
    except CommitFailedError:
        return DeltaTable(path)


def table_exists(lake_dir: Path, dataset: str, domain: str = DEFAULT_DOMAIN) -> bool:
    return (dataset_dir(lake_dir, dataset, domain) / "_delta_log").is_dir()


def read_table(
    lake_dir: Path, dataset: str, domain: str = DEFAULT_DOMAIN, columns: list[str] | None = None
) -> pa.Table:
    """The current snapshot of a dataset (empty, with its schema, before the first commit)."""
    if not table_exists(lake_dir, dataset, domain):
        schema = table_schema(dataset)
        return schema.empty_table() if columns is None else schema.empty_table().select(columns)
    # Through a pyarrow dataset: DeltaTable.to_pyarrow_table() makes deltalake 1.6.6 abort
    # the interpreter at exit ("terminate called without an active exception").
    dataset_ = DeltaTable(dataset_dir(lake_dir, dataset, domain)).to_pyarrow_dataset()
    return dataset_.to_table(columns=columns)


def stored_offsets(table: DeltaTable, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """Per partition: the next offset the table's commits say is already in it (absent: none)."""
    out = {}
    for p in partitions:
        version = table.transaction_version(app_id(topic, p))
        if version is not None:
            out[p] = int(version)
    return out


def with_event_date(dataset: str, table: pa.Table) -> pa.Table:
    """Rows of ``dataset`` in the table's column order, with their ``event_date``."""
    table = table.select(SCHEMAS[dataset].names).cast(SCHEMAS[dataset])
    dates = pc.cast(table.column(PARTITION_TIME_COLUMN[dataset]), pa.date32())
    return table.append_column(pa.field(PARTITION_COLUMN, pa.date32()), dates)


# ---------------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------------


def money_from_cents(cents: list[int]) -> pa.Array:
    """DECIMAL(18,2) from integer cents, exactly and without a Python Decimal per value."""
    # A decimal's storage is its unscaled integer: cast to scale 0 (exact), then
    # reinterpret the same buffers with scale 2.
    unscaled = pa.array(cents, type=pa.int64()).cast(pa.decimal128(38, 0))
    return pa.Array.from_buffers(
        MONEY, len(unscaled), unscaled.buffers(), unscaled.null_count, unscaled.offset
    )


def utc_micros(values: list[int]) -> pa.Array:
    """A UTC timestamp column from integer microseconds since the epoch."""
    return pa.array(values, type=TS)


# ---------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    """What one commit did."""

    dataset: str
    version: int  # the table version the writer's handle is at (an append's own shows later)
    rows: int
    seconds: float


_MISSING = object()


class TableWriter:
    r"""The only way Riverbed's flows write a lake table: fenced, atomic commits.

    Two kinds of application transactions, both recorded in the commits they fence:

    * *generations* (``<topic>/<partition>/writer``, ``<topic>/windows``): a writer
      :meth:`take_over`\ s them when it starts by committing the next generation, as
      Kafka's ``init_transactions()`` does; each of its commits records its generation
      again and first checks it is still the stored one. The newest writer wins; an
      older one is refused at its next commit, and one racing a take-over loses to
      delta-rs's conflict check on the shared app id.
    * *offsets* (``<topic>/<partition>``): a writer :meth:`claim`\ s them (reads the
      stored next offsets), and each commit moves them forward, after checking they
      are still what this writer last saw.
    """

    def __init__(self, lake_dir: Path, dataset: str, domain: str = DEFAULT_DOMAIN) -> None:
        self.lake_dir = Path(lake_dir)
        self.dataset = dataset
        self.domain = domain
        self.table = open_table(self.lake_dir, dataset, domain)
        self._expected: dict[str, int | None] = {}
        self._generations: dict[str, int] = {}

    def refresh(self) -> None:
        """Catch the handle up with the log (reads only commits it has not seen)."""
        self.table.update_incremental()

    def take_over(self, apps: Iterable[str]) -> dict[str, int]:
        """Become the writer of ``apps`` (generation app ids) with one empty commit that
        records the next generation of each; the generations."""
        apps = list(apps)
        for attempt in range(_CONFLICT_RETRIES + 1):
            self.refresh()
            generations = {app: (self._stored(app) or 0) + 1 for app in apps}
            try:
                self._create_write_transaction([], generations)
                break
            except CommitFailedError:
                # Another writer committed one of these at the same moment: read the log
                # again and take over after it.
                if attempt == _CONFLICT_RETRIES:
                    raise
                time.sleep(0.05 * (attempt + 1))
        self._generations.update(generations)
        return generations

    def claim(self, app_ids: Iterable[str]) -> dict[str, int | None]:
        """The stored next offsets of ``app_ids``, which this writer now expects to own."""
        self.refresh()
        found = {a: self._stored(a) for a in app_ids}
        self._expected.update(found)
        return found

    def expected(self, app: str) -> int | None:
        return self._expected.get(app)

    def _stored(self, app: str) -> int | None:
        version = self.table.transaction_version(app)
        return None if version is None else int(version)

    def _check(self, versions: Mapping[str, int]) -> None:
        self.refresh()
        for app, generation in self._generations.items():
            stored = self._stored(app)
            if stored != generation:
                raise FencedWriter(
                    f"lake table {self.dataset}: another copy of the flow took over {app} "
                    f"(generation {stored}, this writer's {generation}); this one is stale "
                    "and stops without writing"
                )
        for app, new in versions.items():
            expected = self._expected.get(app, _MISSING)
            if expected is _MISSING:
                raise RuntimeError(f"{self.dataset}: commit for {app} without claim()")
            stored = self._stored(app)
            if stored != expected:
                raise FencedWriter(
                    f"lake table {self.dataset}: another writer committed {app} up to "
                    f"{stored} (this writer expected {expected}); a second copy of the flow is "
                    "running or this one is stale, so it stops without writing"
                )
            if stored is not None and new <= stored:
                raise FencedWriter(
                    f"lake table {self.dataset}: refusing to commit {app} version {new}, "
                    f"not newer than the stored {stored}"
                )

    def _properties(self, versions: Mapping[str, int]) -> CommitProperties:
        recorded = {**self._generations, **versions}
        return CommitProperties(
            app_transactions=[Transaction(app, v) for app, v in sorted(recorded.items())],
            # A plain retry after losing a race to an append is safe (appends do not
            # conflict); a lost race on one of our app ids is final (see _commit).
            max_commit_retries=_CONFLICT_RETRIES,
        )

    def _create_write_transaction(
        self, actions: list[AddAction], versions: Mapping[str, int]
    ) -> None:
        self.table.create_write_transaction(
            actions,
            mode="append",
            schema=table_schema(self.dataset),
            partition_by=[PARTITION_COLUMN],
            commit_properties=self._properties(versions),
        )

    def append(self, rows: pa.Table, versions: Mapping[str, int]) -> Commit:
        """Append ``rows`` (of this dataset's columns) and record ``versions`` atomically.

        ``rows`` may be empty: the commit then only moves the versions.

        The Parquet files are written here with pyarrow and committed with delta-rs's
        transaction API (``create_write_transaction``), not with ``write_deltalake``:
        measured with deltalake 1.6.6, ``write_deltalake``'s cost per append grows with
        the table's live files (29 ms a commit at 100 files, 118 ms at 400: a flow
        committing every 5 s adds 720 files an hour), while a commit of ready files
        stays flat (~50 ms at 400). Compaction (``optimize``) and MERGE stay delta-rs's.
        The files carry Delta statistics for ``_partition`` and ``_offset`` only, which
        is what incremental readers skip files by (see :func:`_offset_stats`).
        """
        data = with_event_date(self.dataset, rows)
        root = dataset_dir(self.lake_dir, self.dataset, self.domain)

        def write() -> bool:
            actions = [_write_file(root, part, day) for day, part in _by_event_date(data)]
            self._create_write_transaction(actions, versions)
            # This API leaves the handle where it was; the next commit's check catches it
            # up (refreshing here as well costs ~25 ms a commit for nothing).
            return True

        return self._commit(write, data.num_rows, versions)

    def upsert(self, rows: pa.Table, versions: Mapping[str, int], *, keep_if: str | None) -> Commit:
        """MERGE ``rows`` into the table by the dataset's keys (:data:`MERGE_KEYS`).

        ``keep_if``: a predicate over ``s`` (the new row) and ``t`` (the stored one) that
        must hold for a stored row to be replaced, e.g. ``s.txn_count >= t.txn_count``.
        """
        data = with_event_date(self.dataset, rows)
        keys = MERGE_KEYS[self.dataset]
        on = " and ".join(f"t.{k} = s.{k}" for k in keys)
        dates = sorted(
            {d.isoformat() for d in pc.unique(data.column(PARTITION_COLUMN)).to_pylist()}
        )
        # The partitions the rows fall in: lets the merge skip every other file.
        prune = f"t.{PARTITION_COLUMN} in ({', '.join(repr(d) for d in dates)})"

        def merge() -> bool:
            before = self.table.version()
            (
                self.table.merge(
                    data,
                    predicate=f"{prune} and {on}",
                    source_alias="s",
                    target_alias="t",
                    commit_properties=self._properties(versions),
                )
                .when_matched_update_all(predicate=keep_if)
                .when_not_matched_insert_all()
                .execute()
            )
            # Nothing to change (rows already there): delta-rs made no commit, and the
            # stored versions did not move either.
            return self.table.version() != before

        return self._commit(merge, data.num_rows, versions)

    def _commit(
        self, operation: Callable[[], bool], rows: int, versions: Mapping[str, int]
    ) -> Commit:
        began = time.monotonic()
        for attempt in range(_CONFLICT_RETRIES + 1):
            self._check(versions)
            try:
                committed = operation()
                break
            except CommitFailedError as exc:
                if "Concurrent transaction" in str(exc):
                    raise FencedWriter(
                        f"lake table {self.dataset}: another writer committed the same source "
                        f"partitions at the same time ({exc}); this writer stops"
                    ) from exc
                if attempt == _CONFLICT_RETRIES:
                    raise
                # Lost a race a retry may win (a MERGE against a compaction that rewrote
                # the files it read): read the log again and redo the whole operation.
                log.info("commit conflict, retrying", extra={"dataset": self.dataset, "err": exc})
                time.sleep(0.05 * (attempt + 1))
        if committed:
            self._expected.update(versions)
        return Commit(
            dataset=self.dataset,
            version=self.table.version(),
            rows=rows,
            seconds=time.monotonic() - began,
        )


def _by_event_date(data: pa.Table) -> list[tuple[str, pa.Table]]:
    if data.num_rows == 0:
        return []
    days = data.column(PARTITION_COLUMN)
    out = []
    for day in sorted(pc.unique(days).to_pylist()):
        part = data.filter(pc.equal(days, pa.scalar(day, pa.date32())))
        out.append((day.isoformat(), part.drop_columns([PARTITION_COLUMN])))
    return out


def _write_file(root: Path, part: pa.Table, day: str) -> AddAction:
    """One data file in its partition directory, not yet part of the table: until the
    commit lists it no reader sees it, and if the commit never comes vacuum removes it."""
    relative = f"{PARTITION_COLUMN}={day}/part-{uuid.uuid4()}.parquet"
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(part, path, compression="snappy")
    return AddAction(
        path=relative,
        size=path.stat().st_size,
        partition_values={PARTITION_COLUMN: day},
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=json.dumps(_offset_stats(part)),
    )


def _offset_stats(part: pa.Table) -> dict[str, Any]:
    """Delta file statistics: the row count, and min/max/nulls of the integer lineage
    columns. Other columns are left out on purpose (statistics are optional per column):
    a timestamp's statistic is truncated to milliseconds by the protocol, and a wrong
    bound would make a reader skip a file it needs."""
    stats: dict[str, Any] = {"numRecords": part.num_rows}
    columns = [c for c in ("_partition", "_offset") if c in part.column_names]
    if columns and part.num_rows:
        bounds = {c: pc.min_max(part.column(c)).as_py() for c in columns}
        stats["minValues"] = {c: b["min"] for c, b in bounds.items()}
        stats["maxValues"] = {c: b["max"] for c, b in bounds.items()}
        stats["nullCount"] = {c: part.column(c).null_count for c in columns}
    return stats


# ---------------------------------------------------------------------------------
# upkeep: compaction and vacuum
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compaction:
    dataset: str
    files_removed: int
    files_added: int
    partitions_optimized: int
    version: int


def compact(
    lake_dir: Path,
    dataset: str,
    domain: str = DEFAULT_DOMAIN,
    *,
    target_size: int = 128 * 1024 * 1024,
) -> Compaction:
    """Rewrite a table's small files into large ones (delta-rs ``optimize.compact``).

    Safe while a flow appends: appends only add files, so they never conflict with
    the files compaction removes. A flow's upsert that read a file compaction removed
    loses the race and retries (see :meth:`TableWriter._commit`); compaction losing
    it is retried here. A table created with other :data:`TABLE_PROPERTIES` (by an
    older Riverbed) gets the current ones first.
    """
    table = open_table(lake_dir, dataset, domain)
    _apply_properties(table)
    for attempt in range(_CONFLICT_RETRIES + 1):
        try:
            metrics = table.optimize.compact(
                target_size=target_size,
                commit_properties=CommitProperties(max_commit_retries=_CONFLICT_RETRIES),
            )
            break
        except CommitFailedError:
            if attempt == _CONFLICT_RETRIES:
                raise
            time.sleep(0.2 * (attempt + 1))
            table.update_incremental()
    return Compaction(
        dataset=dataset,
        files_removed=int(metrics.get("numFilesRemoved", 0)),
        files_added=int(metrics.get("numFilesAdded", 0)),
        partitions_optimized=int(metrics.get("partitionsOptimized", 0)),
        version=table.version(),
    )


def _apply_properties(table: DeltaTable) -> None:
    configured = table.metadata().configuration
    stale = {k: v for k, v in TABLE_PROPERTIES.items() if configured.get(k) != v}
    if stale:
        log.info("table properties updated", extra={"table": table.table_uri, **stale})
        table.alter.set_table_properties(
            stale, commit_properties=CommitProperties(max_commit_retries=_CONFLICT_RETRIES)
        )


def vacuum(
    lake_dir: Path, dataset: str, domain: str = DEFAULT_DOMAIN, *, retention_hours: float
) -> list[str]:
    """Delete data files the log no longer references and older than ``retention_hours``
    (files replaced by compaction, orphans of a writer killed mid-write); their paths."""
    table = open_table(lake_dir, dataset, domain)
    return table.vacuum(
        retention_hours=max(0, round(retention_hours)),
        dry_run=False,
        enforce_retention_duration=False,
        # Full: list the directory, not only the tombstones still in the log, which
        # expire long before this retention does (see TABLE_PROPERTIES).
        full=True,
    )


# ---------------------------------------------------------------------------------
# reading: what is in a table, and DuckDB over it
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSummary:
    version: int
    files: int
    rows: int
    last_commit_at: float | None  # unix seconds of the newest commit
    bytes: int = 0  # of the live files


def summary(lake_dir: Path, dataset: str, domain: str = DEFAULT_DOMAIN) -> TableSummary | None:
    """Version, live files and rows of a table, from its log (no data read); None if absent."""
    if not table_exists(lake_dir, dataset, domain):
        return None
    table = DeltaTable(dataset_dir(lake_dir, dataset, domain))
    actions = pa.table(table.get_add_actions(flatten=True))
    rows = pc.sum(actions.column("num_records")).as_py() if actions.num_rows else 0
    return TableSummary(
        version=table.version(),
        files=actions.num_rows,
        rows=int(rows or 0),
        last_commit_at=_commit_time(dataset_dir(lake_dir, dataset, domain), table.version()),
        bytes=int(pc.sum(actions.column("size_bytes")).as_py() or 0) if actions.num_rows else 0,
    )


def _commit_time(path: Path, version: int) -> float | None:
    # The commit file's mtime: reading history() would parse the whole log.
    try:
        return (path / "_delta_log" / f"{version:020d}.json").stat().st_mtime
    except FileNotFoundError:
        return None


def duckdb_extension_dir() -> str:
    """Where the ``duckdb-ext-delta`` package put DuckDB's delta extension.

    DuckDB would download the extension on first ``LOAD``; Riverbed installs it from
    its package on the Python registry instead, so nothing is fetched at run time.
    """
    import duckdb_ext  # the namespace package duckdb-ext-delta installs

    return os.path.join(next(iter(duckdb_ext.__path__)), "extensions")


def duckdb_config() -> dict[str, Any]:
    """DuckDB settings that load the delta extension from the installed package only."""
    return {
        "extension_directory": duckdb_extension_dir(),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": True,
    }


def connect_duckdb(database: str = ":memory:", *, read_only: bool = False) -> Any:
    """A DuckDB connection that reads the lake: the delta extension is loaded."""
    import duckdb

    con = duckdb.connect(database, read_only=read_only, config=duckdb_config())
    con.execute("load delta")
    return con


def scan_sql(lake_dir: Path, dataset: str, domain: str = DEFAULT_DOMAIN) -> str:
    """A DuckDB table expression over a dataset's current snapshot (needs the delta
    extension: see :func:`duckdb_config`)."""
    return f"delta_scan('{dataset_dir(lake_dir, dataset, domain).as_posix()}')"
