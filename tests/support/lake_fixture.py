"""A synthetic Riverbed lake, written the way the flow writes it, for tests without Kafka.

The lake contract (see ``shared/DESIGN.md``): one Delta Lake table per dataset at
``<lake>/payments/<dataset>/``, partitioned by ``event_date``, datasets
``transactions``, ``alerts`` and ``merchant_minute``. Each commit of rows read from
Kafka records, as Delta application transactions, the next offset of every source
partition it covers; ``merchant_minute`` holds one row per (merchant_id,
window_start), a late correction being an upsert.

The fixture writes through :class:`riverbed.lake.TableWriter`, the flow's own writer,
so it cannot drift from what the flow writes. Typical use::

    lake = SyntheticLake(tmp_path / "lake")
    txns = lake.offsets.assign(make_rows(...))      # _topic/_partition/_offset like Kafka would
    lake.commit("transactions", txns)               # one Delta commit
    lake.upsert_windows(merchant_minute_rows(txns, alerts))

The helpers :func:`dedupe_transactions` and :func:`merchant_minute_rows` are the
reference (oracle) semantics tests compare the warehouse against: plain Python over
the input, independent of the code under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from collections import defaultdict
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from riverbed import lake
from riverbed.lake import MONEY, SCHEMAS, TS, Commit, TableWriter
from riverbed.topics import PAYMENTS_TRANSACTIONS

DOMAIN = lake.DEFAULT_DOMAIN

TOPIC = PAYMENTS_TRANSACTIONS
DAY_US = 86_400_000_000
T0 = 20_000 * DAY_US  # 2024-10-04


def txns(offsets: range, partition: int = 0, day: int = 0) -> pa.Table:
    """Valid transactions at ``offsets`` of one partition, as the flow writes them (for
    tests that need a lake table, not its contents)."""
    n = len(offsets)
    return pa.table(
        {
            "transaction_id": [f"tx-{partition}-{o}" for o in offsets],
            "card_id": ["c"] * n,
            "merchant_id": ["m"] * n,
            "mcc": ["5411"] * n,
            "amount": lake.money_from_cents([100 + o for o in offsets]),
            "currency": ["EUR"] * n,
            "country": ["FR"] * n,
            "lat": [1.0] * n,
            "lon": [2.0] * n,
            "channel": ["pos"] * n,
            "event_time": lake.utc_micros([T0 + day * DAY_US + o for o in offsets]),
            "late": [False] * n,
            "_topic": [TOPIC] * n,
            "_partition": pa.array([partition] * n, pa.int32()),
            "_offset": pa.array(list(offsets), pa.int64()),
        }
    )


CENT = Decimal("0.01")
WINDOWS_APP_ID = "payments/windows"

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
# writing the Delta tables
# --------------------------------------------------------------------------------------


def next_offsets(table: pa.Table) -> dict[str, int]:
    """Per source partition of ``table``'s rows: app id -> the next offset to read."""
    if table.num_rows == 0:
        return {}
    grouped = table.group_by(["_topic", "_partition"]).aggregate([("_offset", "max")])
    return {
        lake.app_id(r["_topic"], r["_partition"]): r["_offset_max"] + 1 for r in grouped.to_pylist()
    }


class SyntheticLake:
    """Writes the lake's Delta tables under ``root`` (a lake root, e.g. home/lake)."""

    def __init__(self, root: Path, domain: str = DOMAIN) -> None:
        self.root = Path(root)
        self.domain = domain
        self.offsets = OffsetAssigner()
        self._writers: dict[str, TableWriter] = {}
        self._window_version = 0

    def dataset_dir(self, dataset: str) -> Path:
        return lake.dataset_dir(self.root, dataset, self.domain)

    def writer(self, dataset: str) -> TableWriter:
        if dataset not in self._writers:
            self._writers[dataset] = TableWriter(self.root, dataset, self.domain)
        return self._writers[dataset]

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
        rows_per_commit: int | None = None,
    ) -> list[Commit]:
        """Append ``rows`` of ``transactions`` or ``alerts`` in one commit (or several of
        ``rows_per_commit``), each recording the next offset of the partitions it covers,
        as the flow does. The versions must grow: rows below what a partition already
        committed are refused (:class:`riverbed.lake.FencedWriter`), as a stale flow is.
        """
        table = self.to_table(dataset, rows)
        if table.num_rows == 0:
            return []
        step = rows_per_commit or table.num_rows
        commits = []
        for start in range(0, table.num_rows, step):
            chunk = table.slice(start, step)
            versions = next_offsets(chunk)
            writer = self.writer(dataset)
            writer.claim([a for a in versions if writer.expected(a) is None])
            commits.append(writer.append(chunk, versions))
        return commits

    def upsert_windows(self, rows: Sequence[Mapping[str, Any]] | pa.Table) -> Commit | None:
        """Upsert ``merchant_minute`` rows by (merchant_id, window_start), as the flow's
        window sink does: a stored window is replaced by a row counting at least as much."""
        table = self.to_table("merchant_minute", rows)
        if table.num_rows == 0:
            return None
        writer = self.writer("merchant_minute")
        if self._window_version == 0:
            self._window_version = writer.claim([WINDOWS_APP_ID])[WINDOWS_APP_ID] or 0
        self._window_version += 1
        return writer.upsert(
            table, {WINDOWS_APP_ID: self._window_version}, keep_if="s.txn_count >= t.txn_count"
        )

    def read(self, dataset: str) -> pa.Table:
        """The current snapshot of a dataset."""
        return lake.read_table(self.root, dataset, self.domain)


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
    alerts whose transaction is in the window.
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
    extra_env: Mapping[str, str] | None = None,
) -> DbtRun:
    """Run ``dbt <command>`` on the project with ``RIVERBED_HOME=home`` (as Riverbed does).

    The warehouse is ``home/warehouse.duckdb``, the lake ``home/lake``; dbt's target and
    log directories go under ``home`` too, so runs never share state.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERBED_")}
    env.update(RIVERBED_HOME=str(home), DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    env.update(extra_env or {})
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


def dbt_command(
    home: Path, command: str = "build", *args: str, target: str = "dbt-target"
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of ``dbt <command>`` as :func:`run_dbt` runs it, for a
    caller that starts the process itself (to run builds concurrently)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERBED_")}
    env.update(RIVERBED_HOME=str(home), DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    argv = [
        str(DBT_EXECUTABLE), "--no-use-colors", command,
        "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
        "--target-path", str(home / target), "--log-path", str(home / f"{target}-logs"),
        *args,
    ]  # fmt: skip
    return argv, env


Built = TypeVar("Built")


def build_together(
    home: Path, scenarios: Mapping[str, Generator[None, DbtRun, Built]]
) -> dict[str, Built]:
    """Scenarios that share one warehouse (``home``), each a generator that prepares its
    lake up to a ``yield`` and is then sent the run of the ``dbt build`` that follows
    (every build builds every domain's marts, so one build serves them all). Builds run
    until every scenario has returned; its return values, by name."""
    pending = dict(scenarios)
    for scenario in pending.values():
        next(scenario)
    done: dict[str, Built] = {}
    while pending:
        run = run_dbt(home, "build")
        assert run.ok, run.output[-6000:]
        for name, scenario in list(pending.items()):
            try:
                scenario.send(run)
            except StopIteration as finished:
                done[name] = finished.value
                del pending[name]
    return done
