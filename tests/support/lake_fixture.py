"""A synthetic Riverbed lake, written exactly as the flow writes it, for tests without Kafka.

The lake contract (see ``shared/DESIGN.md``):

- Hive-partitioned Parquet, ``<lake>/payments/<dataset>/event_date=YYYY-MM-DD/<name>.parquet``
  for the datasets ``transactions``, ``alerts`` and ``merchant_minute``. The partition
  value is the UTC date of ``event_time`` (``window_start`` for ``merchant_minute``); it
  lives in the path, not in the file.
- A file appears atomically: it is written under a hidden temporary name in its
  partition directory, then renamed into place.
- After the rename, one JSON line is appended to ``<lake>/_manifest/payments/<dataset>.jsonl``:
  ``{"path", "dataset", "rows", "committed_at", "ranges": [{"topic", "partition",
  "first_offset", "last_offset"}]}`` with ``path`` relative to the lake root.

Typical use::

    lake = SyntheticLake(tmp_path / "lake")
    txns = lake.offsets.assign(make_rows(...))      # _topic/_partition/_offset like Kafka would
    lake.commit("transactions", txns)               # one file per event_date
    lake.commit("merchant_minute", merchant_minute_rows(txns, alerts))

The schemas and paths are :mod:`riverbed.lake`'s own, so the fixture cannot drift
from what the flow writes. The helpers :func:`dedupe_transactions` and
:func:`merchant_minute_rows` are the reference (oracle) semantics tests compare the
warehouse against.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from riverbed import lake
from riverbed.lake import MONEY, PARTITION_TIME_COLUMN, SCHEMAS, TS, OffsetRange
from riverbed.topics import PAYMENTS_TRANSACTIONS

DOMAIN = lake.DEFAULT_DOMAIN
CENT = Decimal("0.01")

Row = dict[str, Any]


# --------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------


def to_utc(value: datetime | str) -> datetime:
    """An aware UTC datetime from a datetime (naive means UTC) or an RFC 3339 string."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_money(value: Decimal | float | int | str) -> Decimal:
    """A decimal with two places, as the lake stores ``amount`` (DECIMAL(18,2))."""
    return Decimal(str(value)).quantize(CENT)


def _normalise(dataset: str, row: Mapping[str, Any]) -> Row:
    out: Row = {}
    for f in SCHEMAS[dataset]:
        value = row.get(f.name)
        if value is not None:
            if f.type == TS:
                value = to_utc(value)
            elif f.type == MONEY:
                value = to_money(value)
        out[f.name] = value
    if dataset == "transactions" and out["late"] is None:
        out["late"] = False
    if dataset == "merchant_minute" and out["revision"] is None:
        out["revision"] = 0
    return out


# --------------------------------------------------------------------------------------
# offsets, as Kafka assigns them
# --------------------------------------------------------------------------------------


@dataclass
class OffsetAssigner:
    """Gives rows ``_topic``/``_partition``/``_offset`` the way a keyed producer would.

    The partition is a stable hash of the key column modulo ``partitions``; offsets grow
    by one per partition across calls, so a resend (the same transaction sent again)
    gets a later offset in the same partition.
    """

    topic: str = PAYMENTS_TRANSACTIONS
    partitions: int = 3
    key: str = "card_id"
    next_offset: dict[int, int] = field(default_factory=dict)

    def partition_of(self, key_value: str) -> int:
        return zlib.crc32(key_value.encode()) % self.partitions

    def assign(self, rows: Iterable[Mapping[str, Any]]) -> list[Row]:
        out = []
        for row in rows:
            partition = self.partition_of(str(row[self.key]))
            offset = self.next_offset.get(partition, 0)
            self.next_offset[partition] = offset + 1
            out.append({**row, "_topic": self.topic, "_partition": partition, "_offset": offset})
        return out


# --------------------------------------------------------------------------------------
# files and the manifest
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommittedFile:
    """One file renamed into the lake (and, unless told otherwise, listed in the manifest)."""

    path: str  # relative to the lake root, as the manifest writes it
    dataset: str
    event_date: date
    rows: int
    ranges: tuple[OffsetRange, ...]
    committed_at: datetime

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "dataset": self.dataset,
            "rows": self.rows,
            "committed_at": self.committed_at.isoformat(),
            "ranges": [r.as_json() for r in self.ranges],
        }


def offset_ranges(table: pa.Table) -> tuple[OffsetRange, ...]:
    """Per (topic, partition): the first and last offset a table holds (none without offsets)."""
    if "_offset" not in table.column_names or table.num_rows == 0:
        return ()
    grouped = table.group_by(["_topic", "_partition"]).aggregate(
        [("_offset", "min"), ("_offset", "max")]
    )
    ranges = [
        OffsetRange(r["_topic"], r["_partition"], r["_offset_min"], r["_offset_max"])
        for r in grouped.to_pylist()
    ]
    return tuple(sorted(ranges, key=lambda r: (r.topic, r.partition)))


class SyntheticLake:
    """Writes Parquet files and manifest lines under ``root`` (a lake root, e.g. home/lake)."""

    def __init__(self, root: Path, domain: str = DOMAIN) -> None:
        self.root = Path(root)
        self.domain = domain
        self.offsets = OffsetAssigner()
        self._seq = 0

    # --- paths -------------------------------------------------------------------------
    def dataset_dir(self, dataset: str) -> Path:
        return lake.dataset_dir(self.root, dataset, self.domain)

    def manifest_path(self, dataset: str) -> Path:
        return lake.manifest_path(self.root, dataset, self.domain)

    # --- writing -----------------------------------------------------------------------
    def to_table(self, dataset: str, rows: Sequence[Mapping[str, Any]] | pa.Table) -> pa.Table:
        """Rows (dicts) or an Arrow table, cast to the dataset's exact schema."""
        schema = SCHEMAS[dataset]
        if isinstance(rows, pa.Table):
            return rows.select(schema.names).cast(schema)
        return pa.Table.from_pylist([_normalise(dataset, r) for r in rows], schema=schema)

    def commit(
        self,
        dataset: str,
        rows: Sequence[Mapping[str, Any]] | pa.Table,
        *,
        manifest: bool = True,
        rows_per_file: int | None = None,
    ) -> list[CommittedFile]:
        """Write ``rows`` as one file per ``event_date`` (or several of ``rows_per_file``).

        Each file is renamed into place, then (``manifest=True``) listed in the manifest,
        in that order, as the flow does. ``manifest=False`` leaves an orphan file, as a
        crash between the rename and the manifest append would.
        """
        table = self.to_table(dataset, rows)
        if table.num_rows == 0:
            return []
        dates = pc.cast(table.column(PARTITION_TIME_COLUMN[dataset]), pa.date32())
        committed = []
        for event_date in sorted(pc.unique(dates).to_pylist()):
            part = table.filter(pc.equal(dates, pa.scalar(event_date, pa.date32())))
            step = rows_per_file or part.num_rows
            for start in range(0, part.num_rows, step):
                chunk = part.slice(start, step)
                committed.append(self.commit_file(dataset, event_date, chunk, manifest=manifest))
        return committed

    def commit_file(
        self, dataset: str, event_date: date, table: pa.Table, *, manifest: bool = True
    ) -> CommittedFile:
        """Write one file into ``event_date=...`` atomically; append its manifest line."""
        table = self.to_table(dataset, table)
        self._seq += 1
        name = f"part-{self._seq:06d}-{uuid.uuid4().hex[:12]}.parquet"
        directory = self.dataset_dir(dataset) / f"event_date={event_date.isoformat()}"
        directory.mkdir(parents=True, exist_ok=True)
        temp = directory / f".{name}.tmp"
        pq.write_table(table, temp)
        os.replace(temp, directory / name)
        committed = CommittedFile(
            path=(directory / name).relative_to(self.root).as_posix(),
            dataset=dataset,
            event_date=event_date,
            rows=table.num_rows,
            ranges=offset_ranges(table),
            committed_at=datetime.now(UTC),
        )
        if manifest:
            self.append_manifest(committed)
        return committed

    def append_manifest(self, committed: CommittedFile) -> None:
        path = self.manifest_path(committed.dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(committed.manifest_entry()) + "\n")

    def append_torn_manifest_line(self, dataset: str) -> None:
        """A manifest line cut short (no newline), as a crash mid-append leaves it."""
        path = self.manifest_path(dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write('{"path": "payments/' + dataset + "/event_date=2026-01-01/part-9")

    def write_temp_file(self, dataset: str, event_date: date) -> Path:
        """A half-written hidden temporary file, which readers must never see."""
        directory = self.dataset_dir(dataset) / f"event_date={event_date.isoformat()}"
        directory.mkdir(parents=True, exist_ok=True)
        temp = directory / f".part-{uuid.uuid4().hex[:12]}.parquet"
        temp.write_bytes(b"PAR1 not a whole parquet file")
        return temp

    # --- reading back ------------------------------------------------------------------
    def manifest(self, dataset: str) -> list[dict[str, Any]]:
        """The complete manifest lines of a dataset (a torn last line is skipped)."""
        path = self.manifest_path(dataset)
        if not path.exists():
            return []
        entries = []
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
            if line.endswith("\n"):
                entries.append(json.loads(line))
        return entries


# --------------------------------------------------------------------------------------
# reference semantics (the oracle)
# --------------------------------------------------------------------------------------


def dedupe_transactions(rows: Iterable[Mapping[str, Any]]) -> list[Row]:
    """One row per transaction_id, the one at the earliest (partition, offset)."""
    best: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        current = best.get(row["transaction_id"])
        if current is None or (row["_partition"], row["_offset"]) < (
            current["_partition"],
            current["_offset"],
        ):
            best[row["transaction_id"]] = row
    return [dict(r) for r in best.values()]


def window_start(ts: datetime | str, window_s: int = 60) -> datetime:
    t = to_utc(ts)
    epoch = int(t.timestamp())
    return datetime.fromtimestamp(epoch - epoch % window_s, UTC)


def merchant_minute_rows(
    transactions: Iterable[Mapping[str, Any]],
    alerts: Iterable[Mapping[str, Any]] = (),
    window_s: int = 60,
) -> list[Row]:
    """The ``merchant_minute`` rows the flow computes from (deduplicated) transactions.

    A late transaction (``late`` true: older than its partition's watermark when it
    came) joins no window: it is only in ``transactions``. ``alert_count`` counts the
    alerts whose transaction is in the window; ``revision`` is 0 (a caller writing a
    window again sets it higher).
    """
    txns = [t for t in dedupe_transactions(transactions) if not t.get("late")]
    merchant_of = {t["transaction_id"]: t for t in txns}
    groups: dict[tuple[str, datetime], list[Mapping[str, Any]]] = defaultdict(list)
    for t in txns:
        groups[(t["merchant_id"], window_start(t["event_time"], window_s))].append(t)
    alert_counts: dict[tuple[str, datetime], int] = defaultdict(int)
    for a in alerts:
        t = merchant_of.get(a["transaction_id"])
        if t is not None:
            alert_counts[(t["merchant_id"], window_start(t["event_time"], window_s))] += 1
    out = []
    for (merchant_id, start), members in sorted(groups.items()):
        amounts = [to_money(m["amount"]) for m in members]
        total = sum(amounts, Decimal(0))
        out.append(
            {
                "merchant_id": merchant_id,
                "window_start": start,
                "window_end": start + timedelta(seconds=window_s),
                "txn_count": len(members),
                "amount_sum": total,
                "amount_min": min(amounts),
                "amount_max": max(amounts),
                "amount_mean": float(total) / len(members),
                "distinct_cards": len({m["card_id"] for m in members}),
                "alert_count": alert_counts[(merchant_id, start)],
                "revision": 0,
            }
        )
    return out


# --------------------------------------------------------------------------------------
# running dbt over a lake
# --------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = REPO / "dbt"
DBT_EXECUTABLE = Path(sys.executable).parent / "dbt"


@dataclass(frozen=True)
class DbtRun:
    """The outcome of one dbt invocation."""

    returncode: int
    output: str
    target_path: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def run_results(self) -> dict[str, Any]:
        return json.loads((self.target_path / "run_results.json").read_text())

    def statuses(self) -> dict[str, str]:
        """unique_id -> status of every node of the run."""
        return {r["unique_id"]: r["status"] for r in self.run_results()["results"]}

    def compiled_sql(self, model_path: str) -> str:
        """The compiled SQL of a model, e.g. ``marts/payments/fct_transactions.sql``."""
        return (self.target_path / "compiled" / "riverbed" / "models" / model_path).read_text()


def run_dbt(
    home: Path,
    command: str = "build",
    *args: str,
    dbt_vars: Mapping[str, Any] | None = None,
) -> DbtRun:
    """Run ``dbt <command>`` on the project with ``RIVERBED_HOME=home`` (as Riverbed does).

    The warehouse is ``home/warehouse.duckdb``, the lake ``home/lake``; dbt's target and
    log directories go under ``home`` too, so runs never share state.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERBED_")}
    env.update(RIVERBED_HOME=str(home), DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    target = home / "dbt-target"
    argv = [
        str(DBT_EXECUTABLE), "--no-use-colors", command,
        "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
        "--target-path", str(target), "--log-path", str(home / "dbt-logs"),
        *(["--vars", json.dumps(dict(dbt_vars))] if dbt_vars else []),
        *args,
    ]  # fmt: skip
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    return DbtRun(proc.returncode, proc.stdout + proc.stderr, target)
