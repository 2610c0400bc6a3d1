"""The Parquet lake: how files are named, written, committed and listed.

Layout (a contract: dbt reads it)::

    <lake>/<domain>/<dataset>/event_date=YYYY-MM-DD/<name>.parquet
    <lake>/_manifest/<domain>/<dataset>.jsonl

A file is written under a hidden temporary name (``.<name>.tmp``, which a
``*.parquet`` glob never matches), fsynced, renamed into place, and only then
listed in the manifest (one JSON line, appended and fsynced). Files are the
truth: rows that come from a topic partition go into files named after the
offsets they hold (``p03-000000000100-000000000250.parquet``), so after a
crash between the rename and the manifest append a restart can add the
missing line (:func:`roll_forward_manifest`) and a writer can tell from names
alone which offsets are already in the lake (:func:`offset_high_water`).

Nothing here knows about Bytewax or Kafka clients; the flow drives it.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

DEFAULT_DOMAIN = "payments"

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

# ``revision`` is 0 for a window's first row; a window corrected by data that
# arrived after it closed gets a new row with the full values and revision + 1.
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
        pa.field("revision", pa.int32()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "transactions": TRANSACTIONS_SCHEMA,
    "alerts": ALERTS_SCHEMA,
    "merchant_minute": MERCHANT_MINUTE_SCHEMA,
}

# The column whose UTC date is a row's event_date partition.
PARTITION_TIME_COLUMN: dict[str, str] = {
    "transactions": "event_time",
    "alerts": "event_time",
    "merchant_minute": "window_start",
}

# An empty file in a partition no real row can have: DuckDB's read_parquet fails
# on a glob without matches, so a dataset is readable before its first flush.
SCHEMA_FILE_DATE = "1970-01-01"
SCHEMA_FILE_NAME = "_schema.parquet"

# Manifest lines are read backwards in chunks of this size.
_TAIL_CHUNK = 1 << 20
# File times and manifest times come from one host's clock; allow it to step back.
_CLOCK_SLACK_S = 60.0

_RANGE_NAME = re.compile(r"^p(\d+)-(\d{12,})-(\d{12,})\.parquet$")


# ---------------------------------------------------------------------------------
# paths
# ---------------------------------------------------------------------------------


def dataset_dir(lake_dir: Path, dataset: str, domain: str = DEFAULT_DOMAIN) -> Path:
    return Path(lake_dir) / domain / dataset


def manifest_path(lake_dir: Path, dataset: str, domain: str = DEFAULT_DOMAIN) -> Path:
    return Path(lake_dir) / "_manifest" / domain / f"{dataset}.jsonl"


def dataset_glob(lake_dir: Path, dataset: str, domain: str = DEFAULT_DOMAIN) -> str:
    """The glob that reads a whole dataset (committed files only)."""
    return f"{dataset_dir(lake_dir, dataset, domain).as_posix()}/*/*.parquet"


def scan_sql(lake_dir: Path, dataset: str, domain: str = DEFAULT_DOMAIN) -> str:
    """A DuckDB table expression over a dataset, safe to run while the flow writes."""
    return f"read_parquet('{dataset_glob(lake_dir, dataset, domain)}', hive_partitioning = true)"


def range_file_name(partition: int, first_offset: int, last_offset: int) -> str:
    return f"p{partition:02d}-{first_offset:012d}-{last_offset:012d}.parquet"


def parse_range_file_name(name: str) -> tuple[int, int, int] | None:
    """(partition, first_offset, last_offset) of a range-named file, else None."""
    match = _RANGE_NAME.match(name)
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3])


# ---------------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------------


def money_from_cents(cents: Sequence[int]) -> pa.Array:
    """DECIMAL(18,2) from integer cents, exactly and without a Python Decimal per value."""
    # A decimal's storage is its unscaled integer: cast to scale 0 (exact), then
    # reinterpret the same buffers with scale 2.
    unscaled = pa.array(cents, type=pa.int64()).cast(pa.decimal128(38, 0))
    return pa.Array.from_buffers(
        MONEY, len(unscaled), unscaled.buffers(), unscaled.null_count, unscaled.offset
    )


def utc_micros(values: Sequence[int]) -> pa.Array:
    """A UTC timestamp column from integer microseconds since the epoch."""
    return pa.array(values, type=TS)


# ---------------------------------------------------------------------------------
# the manifest
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OffsetRange:
    topic: str
    partition: int
    first_offset: int
    last_offset: int

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
        }


@dataclass(frozen=True)
class CommittedFile:
    """A file renamed into the lake, as its manifest line describes it."""

    path: str  # relative to the lake root
    dataset: str
    rows: int
    committed_at: datetime
    ranges: tuple[OffsetRange, ...] = ()

    def manifest_line(self) -> bytes:
        entry = {
            "path": self.path,
            "dataset": self.dataset,
            "rows": self.rows,
            "committed_at": self.committed_at.isoformat(),
            "ranges": [r.as_json() for r in self.ranges],
        }
        return (json.dumps(entry, separators=(",", ":")) + "\n").encode()


def append_manifest(lake_dir: Path, files: Iterable[CommittedFile], *, fsync: bool = True) -> None:
    """Append one line per file; each line is one O_APPEND write, so concurrent
    writers (several partitions, several processes) never interleave inside a line."""
    by_dataset: dict[str, list[CommittedFile]] = {}
    for f in files:
        by_dataset.setdefault(f.dataset, []).append(f)
    for dataset, entries in by_dataset.items():
        path = manifest_path(lake_dir, dataset, entries[0].path.split("/", 1)[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for entry in entries:
                os.write(fd, entry.manifest_line())
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)


def read_manifest(
    lake_dir: Path, dataset: str, domain: str = DEFAULT_DOMAIN
) -> list[dict[str, Any]]:
    """The complete lines of a dataset's manifest; a torn line (a crash mid-append) is skipped."""
    path = manifest_path(lake_dir, dataset, domain)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    entries = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "path" in entry:
            entries.append(entry)
    return entries


def repair_manifest_tail(lake_dir: Path, dataset: str, domain: str = DEFAULT_DOMAIN) -> None:
    """End a torn last line with a newline, so the next append starts a line of its own
    (readers then skip the torn fragment as not-JSON)."""
    path = manifest_path(lake_dir, dataset, domain)
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) == b"\n":
                return
    except FileNotFoundError:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------
# listing committed files
# ---------------------------------------------------------------------------------


def _date_dirs(lake_dir: Path, dataset: str, domain: str) -> list[tuple[str, Path]]:
    root = dataset_dir(lake_dir, dataset, domain)
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        if entry.is_dir() and entry.name.startswith("event_date="):
            value = entry.name.split("=", 1)[1]
            if value != SCHEMA_FILE_DATE:
                out.append((value, Path(entry.path)))
    return sorted(out)


def committed_files(
    lake_dir: Path, dataset: str, domain: str = DEFAULT_DOMAIN, *, since: str | None = None
) -> list[Path]:
    """Every committed data file of a dataset (optionally only event_date >= ``since``)."""
    out = []
    for value, directory in _date_dirs(lake_dir, dataset, domain):
        if since is not None and value < since:
            continue
        for entry in os.scandir(directory):
            if entry.name.endswith(".parquet") and not entry.name.startswith((".", "_")):
                out.append(Path(entry.path))
    return sorted(out)


def offset_high_water(
    lake_dir: Path, dataset: str, partition: int, domain: str = DEFAULT_DOMAIN
) -> dict[str, int]:
    """Per event_date: the last offset of ``partition`` already in a committed file.

    Kept per date because one flush writes one file per date: a crash between two
    of them leaves one date ahead of the other.
    """
    prefix = f"p{partition:02d}-"
    marks: dict[str, int] = {}
    for value, directory in _date_dirs(lake_dir, dataset, domain):
        for entry in os.scandir(directory):
            if not entry.name.startswith(prefix):
                continue
            parsed = parse_range_file_name(entry.name)
            if parsed is not None and parsed[0] == partition:
                marks[value] = max(marks.get(value, -1), parsed[2])
    return marks


def high_water_of_date(
    lake_dir: Path, dataset: str, partition: int, event_date: str, domain: str = DEFAULT_DOMAIN
) -> tuple[int, list[Path]]:
    """The last offset of ``partition`` committed in one event_date partition (-1: none),
    and that partition's files of ``partition`` holding it (for a roll-forward check)."""
    directory = dataset_dir(lake_dir, dataset, domain) / f"event_date={event_date}"
    prefix = f"p{partition:02d}-"
    best, newest = -1, []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return best, newest
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        parsed = parse_range_file_name(entry.name)
        if parsed is None or parsed[0] != partition:
            continue
        if parsed[2] > best:
            best, newest = parsed[2], [Path(entry.path)]
    return best, newest


def remove_temp_files(
    lake_dir: Path,
    dataset: str,
    prefix: str,
    domain: str = DEFAULT_DOMAIN,
    *,
    event_dates: Iterable[str] | None = None,
) -> int:
    """Delete leftovers of a crashed writer: hidden ``.<prefix>*.tmp`` files (in the given
    event_date partitions, or all of them).

    Only the caller's own prefix: another writer may be mid-write right now.
    """
    wanted = None if event_dates is None else set(event_dates)
    removed = 0
    for value, directory in _date_dirs(lake_dir, dataset, domain):
        if wanted is not None and value not in wanted:
            continue
        for entry in os.scandir(directory):
            if entry.name.startswith("." + prefix) and entry.name.endswith(".tmp"):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def _file_entry(lake_dir: Path, path: Path, dataset: str) -> CommittedFile:
    meta = pq.read_metadata(path)
    ranges: tuple[OffsetRange, ...] = ()
    parsed = parse_range_file_name(path.name)
    if parsed is not None and meta.num_rows:
        topic = pq.read_table(path, columns=["_topic"]).column(0)[0].as_py()
        ranges = (OffsetRange(topic, parsed[0], parsed[1], parsed[2]),)
    committed_at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return CommittedFile(
        path=path.relative_to(lake_dir).as_posix(),
        dataset=dataset,
        rows=meta.num_rows,
        committed_at=committed_at,
        ranges=ranges,
    )


def roll_forward_manifest(
    lake_dir: Path,
    dataset: str,
    prefix: str,
    domain: str = DEFAULT_DOMAIN,
    *,
    event_dates: Iterable[str] | None = None,
) -> list[CommittedFile]:
    """List in the manifest every committed file named ``<prefix>*`` that it lacks
    (in the given event_date partitions, or all of them); the lines it added.

    A crash between a rename and its manifest append leaves exactly such a file.
    Call it before the caller writes again, for its own prefix only, so concurrent
    writers never add the same line twice.
    """
    lake_dir = Path(lake_dir)
    wanted = None if event_dates is None else set(event_dates)
    candidates = []
    for value, directory in _date_dirs(lake_dir, dataset, domain):
        if wanted is not None and value not in wanted:
            continue
        for entry in os.scandir(directory):
            if entry.name.startswith(prefix) and entry.name.endswith(".parquet"):
                candidates.append(Path(entry.path))
    return roll_forward_files(lake_dir, dataset, candidates, domain)


def roll_forward_files(
    lake_dir: Path, dataset: str, candidates: list[Path], domain: str = DEFAULT_DOMAIN
) -> list[CommittedFile]:
    """Add the manifest lines missing for these committed files; the lines it added.

    A file's line, if it was written, was appended after the file's rename, so only
    the manifest's lines from the oldest candidate's modification time on are read.
    """
    if not candidates:
        return []
    lake_dir = Path(lake_dir)
    repair_manifest_tail(lake_dir, dataset, domain)
    oldest = min(p.stat().st_mtime for p in candidates)
    listed = manifest_paths_since(lake_dir, dataset, oldest - _CLOCK_SLACK_S, domain)
    missing = [
        _file_entry(lake_dir, p, dataset)
        for p in sorted(candidates)
        if p.relative_to(lake_dir).as_posix() not in listed
    ]
    append_manifest(lake_dir, missing)
    return missing


def manifest_paths_since(
    lake_dir: Path, dataset: str, since: float, domain: str = DEFAULT_DOMAIN
) -> set[str]:
    """The paths of the manifest's lines committed at or after ``since`` (unix seconds),
    read from the end of the file backwards (the manifest only grows)."""
    path = manifest_path(lake_dir, dataset, domain)
    paths: set[str] = set()
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return paths
    with handle:
        end = handle.seek(0, os.SEEK_END)
        carry = b""
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            handle.seek(start)
            chunk = handle.read(end - start) + carry
            lines = chunk.split(b"\n")
            # The first piece may be the tail of a line that starts in the previous chunk.
            carry = lines.pop(0) if start > 0 else b""
            older = False
            for line in reversed(lines):
                entry = _parse_line(line)
                if entry is None:
                    continue
                paths.add(entry["path"])
                committed = entry.get("committed_at")
                if committed and datetime.fromisoformat(committed).timestamp() < since:
                    older = True
            if older:
                break
            end = start
        else:
            if carry and (entry := _parse_line(carry)) is not None:
                paths.add(entry["path"])
    return paths


def _parse_line(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "path" in entry else None


# ---------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LakeWriter:
    """Writes tables of one domain into the lake, one committed file per event_date."""

    def __init__(self, lake_dir: Path, domain: str = DEFAULT_DOMAIN, *, fsync: bool = True) -> None:
        self.lake_dir = Path(lake_dir)
        self.domain = domain
        self.fsync = fsync
        self._repaired: set[str] = set()

    def ensure_dataset(self, dataset: str) -> None:
        """Make the dataset's read glob match at least one (empty) file."""
        directory = dataset_dir(self.lake_dir, dataset, self.domain)
        target = directory / f"event_date={SCHEMA_FILE_DATE}" / SCHEMA_FILE_NAME
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.parent / f".{SCHEMA_FILE_NAME}.{uuid.uuid4().hex[:8]}.tmp"
        pq.write_table(SCHEMAS[dataset].empty_table(), temp)
        os.replace(temp, target)

    def write_partition_rows(
        self, dataset: str, table: pa.Table, *, topic: str, partition: int
    ) -> list[CommittedFile]:
        """Commit rows of one topic partition: one range-named file per event_date."""
        files = []
        for event_date, part in self._split_by_date(dataset, table):
            offsets = part.column("_offset")
            first = pc.min(offsets).as_py()
            last = pc.max(offsets).as_py()
            name = range_file_name(partition, first, last)
            ranges = (OffsetRange(topic, partition, first, last),)
            files.append(self._commit(dataset, event_date, part, name, ranges))
        return files

    def write_rows(
        self, dataset: str, table: pa.Table, *, name_for: Callable[[pa.Table], str]
    ) -> list[CommittedFile]:
        """Commit rows that do not come from a topic: one file per event_date, named by
        ``name_for(rows of that date)`` (a ``.parquet`` name unique in its directory)."""
        return [
            self._commit(dataset, event_date, part, name_for(part), ())
            for event_date, part in self._split_by_date(dataset, table)
        ]

    def _split_by_date(self, dataset: str, table: pa.Table) -> list[tuple[date, pa.Table]]:
        if table.num_rows == 0:
            return []
        table = table.select(SCHEMAS[dataset].names).cast(SCHEMAS[dataset])
        dates = pc.cast(table.column(PARTITION_TIME_COLUMN[dataset]), pa.date32())
        unique = pc.unique(dates).to_pylist()
        if len(unique) == 1:
            return [(unique[0], table)]
        return [
            (d, table.filter(pc.equal(dates, pa.scalar(d, pa.date32())))) for d in sorted(unique)
        ]

    def _commit(
        self,
        dataset: str,
        event_date: date,
        table: pa.Table,
        name: str,
        ranges: tuple[OffsetRange, ...],
    ) -> CommittedFile:
        directory = (
            dataset_dir(self.lake_dir, dataset, self.domain)
            / f"event_date={event_date.isoformat()}"
        )
        directory.mkdir(parents=True, exist_ok=True)
        temp = directory / f".{name}.tmp"
        with open(temp, "wb") as handle:
            pq.write_table(table, handle)
            if self.fsync:
                handle.flush()
                os.fsync(handle.fileno())
        final = directory / name
        os.replace(temp, final)
        if self.fsync:
            _fsync_dir(directory)
        committed = CommittedFile(
            path=final.relative_to(self.lake_dir).as_posix(),
            dataset=dataset,
            rows=table.num_rows,
            committed_at=datetime.now(UTC),
            ranges=ranges,
        )
        if dataset not in self._repaired:
            # A torn line left by a crash must not swallow this writer's first line.
            repair_manifest_tail(self.lake_dir, dataset, self.domain)
            self._repaired.add(dataset)
        append_manifest(self.lake_dir, [committed], fsync=self.fsync)
        return committed
