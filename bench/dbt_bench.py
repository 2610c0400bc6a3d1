"""Benchmark the dbt warehouse build over a synthetic lake, against plain DuckDB SQL.

    python -m bench.dbt_bench [--rows 10000000] [--increment 100000] [--files 100]

What it does, in one run:

1. Generates a Delta lake of ``--rows`` transactions in ``--files`` commits (plus alerts
   and merchant_minute, the contract's three datasets), vectorised in DuckDB (no Python
   loop over rows) and written with riverbed.lake.TableWriter, a few large appends, as
   the flow commits them (offsets recorded per commit, windows upserted). About 1% of
   the records are producer resends.
2. Times, each on a fresh warehouse file: ``dbt run`` (models only) and ``dbt build``
   (models and every data test), and the baseline: the same transformations as plain
   DuckDB SQL (``bench/dbt_baseline.sql``) run by the duckdb Python API. Models only
   (``dbt run``) against the baseline is the like-for-like comparison.
3. Adds ``--increment`` more transactions (a new micro-batch day, and late ones that land
   in the oldest partition; their windows upserted) and times an incremental ``dbt run``
   and ``dbt build`` on copies of the built warehouses.
4. Checks that dbt and the baseline agree (row counts and sums of every mart), prints the
   figures and appends a section to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from riverbed import lake as lake_tables
from tests.support.lake_fixture import WINDOWS_APP_ID, SyntheticLake

REPO = Path(__file__).resolve().parent.parent
DBT = REPO / ".venv" / "bin" / "dbt"
PROJECT_DIR = REPO / "dbt"
BASELINE_SQL = Path(__file__).resolve().parent / "dbt_baseline.sql"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

PARTITIONS = 6
CARDS = 50_000
MERCHANTS = 500
DAYS = 10
START = datetime(2026, 11, 1, tzinfo=UTC)
RESEND_GAP = 7 * PARTITIONS  # a resend repeats the record 7 offsets back in its partition
DBT_ELAPSED: dict[tuple[str, str], float] = {}


# --------------------------------------------------------------------------------------
# the synthetic lake
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Where record k of the transactions topic sits in time: ``rows`` spread over DAYS."""

    rows: int

    @property
    def step_us(self) -> int:
        return DAYS * 86_400_000_000 // self.rows


def _transactions_sql(plan: Plan, first: int, last: int, late_every: int) -> str:
    """Records k in [first, last): logical transaction j (k, or k - RESEND_GAP for a resend)."""
    start_us = int(START.timestamp() * 1_000_000)
    late = f"(k % {late_every} = 0)" if late_every else "false"
    return f"""
    with records as (
        select
            range as k,
            case when hash(range, 'resend') % 100 = 0 and range >= {RESEND_GAP}
                 then range - {RESEND_GAP} else range end as j
        from range({first}, {last})
    )
    select
        'tx-' || j as transaction_id,
        'card-' || (hash(j, 'card') % {CARDS}) as card_id,
        'm-' || (hash(j, 'merchant') % {MERCHANTS}) as merchant_id,
        lpad((hash(j, 'mcc') % 10000)::varchar, 4, '0') as mcc,
        ((hash(j, 'amount') % 50000 + 1) / 100)::decimal(18, 2) as amount,
        ['EUR', 'USD', 'GBP', 'CHF'][(hash(j, 'currency') % 4)::bigint + 1] as currency,
        ['FR', 'DE', 'GB', 'US', 'ES', 'IT', 'NL', 'CH'][(hash(j, 'country') % 8)::bigint + 1]
            as country,
        (hash(j, 'lat') % 180000) / 1000.0 - 90 as lat,
        (hash(j, 'lon') % 360000) / 1000.0 - 180 as lon,
        ['pos', 'online', 'atm'][(hash(j, 'channel') % 3)::bigint + 1] as channel,
        make_timestamptz(case when {late}
            then {start_us} + (hash(j, 'late') % 86400)::bigint * 1000000
            else {start_us} + j * {plan.step_us} end) as event_time,
        {late} as late,
        'payments.transactions' as _topic,
        (k % {PARTITIONS})::integer as _partition,
        (k // {PARTITIONS})::bigint as _offset,
        (j = k) as is_original
    from records
    """


_ALERTS_SQL = """
    select
        'al-' || rule || '-' || transaction_id as alert_id,
        rule, card_id, transaction_id, event_time,
        event_time + interval 2 second as detected_at,
        (hash(transaction_id, 'score') % 1000) / 1000.0 as score,
        '{"rule": "' || rule || '"}' as details,
        _topic, _partition, _offset
    from (
        select *,
            ['velocity', 'amount_spike', 'impossible_travel', 'card_testing'][
                (hash(transaction_id, 'rule') % 4)::bigint + 1] as rule
        from batch
        where is_original and hash(transaction_id, 'alert') % 50 = 0
    )
"""

# merchant_minute, as the flow computes it: over deduplicated transactions, per merchant
# and one-minute event-time window, with the alerts raised on the window's transactions.
_MERCHANT_MINUTE_SQL = """
    with txns as (
        select * from delta_scan('{lake}/payments/transactions')
        qualify row_number() over (partition by transaction_id order by _offset) = 1
    ),
    windowed as (
        select *, time_bucket(interval 1 minute, event_time) as window_start from txns
    ),
    touched as (
        select distinct merchant_id, window_start from windowed where {where}
    ),
    alerts as (
        select transaction_id, count(*) as n
        from delta_scan('{lake}/payments/alerts') group by all
    )
    select
        w.merchant_id, w.window_start, w.window_start + interval 1 minute as window_end,
        count(*) as txn_count, sum(w.amount) as amount_sum, min(w.amount) as amount_min,
        max(w.amount) as amount_max, avg(w.amount)::double as amount_mean,
        count(distinct w.card_id) as distinct_cards, coalesce(sum(a.n), 0)::bigint as alert_count
    from windowed w
    semi join touched using (merchant_id, window_start)
    left join alerts a using (transaction_id)
    group by all
"""


def _commit_batch(con: duckdb.DuckDBPyConnection, lake: SyntheticLake) -> tuple[int, int]:
    txns = con.sql("select * exclude (is_original) from batch").to_arrow_table()
    alerts = con.sql(_ALERTS_SQL).to_arrow_table()
    lake.commit("transactions", txns)
    lake.commit("alerts", alerts)
    return txns.num_rows, alerts.num_rows


def generate(
    lake: SyntheticLake,
    plan: Plan,
    first: int,
    last: int,
    files: int,
    late_every: int = 0,
) -> dict[str, int]:
    """Write records [first, last) as ``files`` transaction (and alert) commits.

    Then the merchant_minute rows of every window those records touched: appended on
    the first call, upserted after (a window that already had a row is updated).
    """
    con = duckdb.connect(config=lake_tables.duckdb_config())
    con.execute("load delta")
    con.execute("set timezone = 'UTC'")
    con.execute("set enable_progress_bar = false")
    per_file = -(-(last - first) // files)
    counts = {"transactions": 0, "alerts": 0, "merchant_minute": 0}
    for lo in range(first, last, per_file):
        hi = min(lo + per_file, last)
        batch_sql = _transactions_sql(plan, lo, hi, late_every)
        con.execute(f"create or replace temp table batch as {batch_sql}")
        n_txn, n_alerts = _commit_batch(con, lake)
        counts["transactions"] += n_txn
        counts["alerts"] += n_alerts
    where = f"_offset >= {first // PARTITIONS}"
    mm = con.sql(_MERCHANT_MINUTE_SQL.format(lake=lake.root, where=where)).to_arrow_table()
    counts["merchant_minute"] = mm.num_rows
    con.close()
    if first == 0:
        writer = lake.writer("merchant_minute")
        writer.claim([WINDOWS_APP_ID])
        writer.append(mm, {WINDOWS_APP_ID: 1})
    else:
        lake.upsert_windows(mm)
    return counts


# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------


def dbt(command: str, home: Path, lake_dir: Path, *extra: str) -> float:
    """Run one dbt command against ``home``/warehouse.duckdb; wall-clock seconds.

    dbt's own figure (run_results.json ``elapsed_time``: the nodes' execution, without
    the interpreter start and the parse) is kept in ``DBT_ELAPSED[home.name, command]``.
    """
    env = {**os.environ, "RIVERBED_HOME": str(home), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    args = [
        str(DBT), command,
        "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR),
        "--target-path", str(home / "dbt-target"), "--log-path", str(home / "dbt-logs"),
        "--vars", f"{{lake_dir: '{lake_dir}'}}",
        *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-2000:])
        raise SystemExit(f"dbt {command} failed (exit {proc.returncode})")
    results = home / "dbt-target" / "run_results.json"
    if results.exists():
        DBT_ELAPSED[home.name, command] = float(json.loads(results.read_text())["elapsed_time"])
    return elapsed


def baseline(db_path: Path, lake_dir: Path) -> float:
    """The same transformations as plain DuckDB SQL on a fresh database; seconds."""
    sql = BASELINE_SQL.read_text().replace("{lake}", str(lake_dir))
    started = time.perf_counter()
    con = duckdb.connect(str(db_path), config=lake_tables.duckdb_config())
    con.execute(sql)
    con.close()
    return time.perf_counter() - started


def top_nodes(run_results: Path, n: int = 6) -> str:
    """The ``n`` slowest nodes of a dbt run, as 'name 1.23 s (compile 0.10), ...', and
    the sum over all nodes (run_results.json: each node's execution_time, of which its
    compile step, where the models' run_query look-ups run)."""
    results = json.loads(run_results.read_text())["results"]
    results.sort(key=lambda r: -r["execution_time"])

    def compile_s(r: dict) -> float:
        for t in r.get("timing", []):
            if t["name"] == "compile" and t.get("started_at") and t.get("completed_at"):
                started = datetime.fromisoformat(t["started_at"].replace("Z", "+00:00"))
                done = datetime.fromisoformat(t["completed_at"].replace("Z", "+00:00"))
                return (done - started).total_seconds()
        return 0.0

    total = sum(r["execution_time"] for r in results)
    return (
        ", ".join(
            f"{r['unique_id'].split('.')[-1]} {r['execution_time']:.2f} s "
            f"(compile {compile_s(r):.2f})"
            for r in results[:n]
        )
        + f"; all {len(results)} nodes {total:.2f} s"
    )


def mart_fingerprint(db_path: Path, schema: str = "main") -> dict[str, tuple[object, ...]]:
    """Row count and a few sums per mart, to check dbt and the baseline agree."""
    probes = {
        "fct_transactions": "count(*), sum(amount)",
        "fct_fraud_alerts": "count(*), round(sum(score), 6)",
        "dim_cards": "count(*), sum(txn_count), sum(amount_sum), sum(alert_count)",
        "dim_merchants": "count(*), sum(txn_count), sum(amount_sum), sum(alert_count)",
        "agg_merchant_hourly": "count(*), sum(txn_count), sum(amount_sum), sum(alert_count)",
        "fct_fraud_daily": "count(*), sum(alert_count), sum(amount_at_risk)",
    }
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return {
            name: con.execute(f"select {probe} from {schema}.{name}").fetchone() or ()
            for name, probe in probes.items()
        }
    finally:
        con.close()


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}"


def versions() -> str:
    from importlib.metadata import version

    return (
        f"Python {platform.python_version()}, duckdb {duckdb.__version__}, "
        f"dbt-core {version('dbt-core')}, dbt-duckdb {version('dbt-duckdb')}, "
        f"pyarrow {pa.__version__}"
    )


@dataclass
class Step:
    """One timed step: wall-clock seconds, and dbt's own elapsed time when it is dbt."""

    label: str
    wall: float
    dbt_elapsed: float | None = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dbt_bench",
        description="Time the dbt warehouse build against plain DuckDB SQL.",
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="transactions in the lake")
    parser.add_argument("--increment", type=int, default=100_000, help="rows added after")
    parser.add_argument(
        "--files", type=int, default=100, help="transaction commits (micro-batches)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="time each step this many times; keep the best"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep everything here")
    parser.add_argument("--no-results", action="store_true", help="don't append to RESULTS.md")
    args = parser.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="riverbed-dbt-bench-"))
    if args.workdir and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    lake_dir = work / "lake"
    lake = SyntheticLake(lake_dir)
    plan = Plan(args.rows)
    homes = {name: work / name for name in ("run", "build", "plain")}
    for home in homes.values():
        home.mkdir()
    steps: dict[str, Step] = {}
    snapshots = work / "snapshots"
    snapshots.mkdir()

    def warehouse(home: str) -> Path:
        return homes[home] / "warehouse.duckdb"

    def dbt_step(key: str, label: str, command: str, home: str, restore: Path | None) -> None:
        """Best of --rounds: each on a fresh warehouse (restore=None) or on a copy of one."""
        best: Step | None = None
        for _ in range(args.rounds):
            warehouse(home).unlink(missing_ok=True)
            if restore is not None:
                shutil.copyfile(restore, warehouse(home))
            wall = dbt(command, homes[home], lake_dir)
            if best is None or wall < best.wall:
                best = Step(label, wall, DBT_ELAPSED.get((home, command)))
                if command == "run":
                    slowest[key] = top_nodes(homes[home] / "dbt-target" / "run_results.json")
        assert best is not None
        steps[key] = best
        print(f"{label}: {best.wall:.2f}s (dbt elapsed {best.dbt_elapsed or 0:.2f}s)", flush=True)

    def plain_step(key: str, label: str) -> None:
        walls = []
        for _ in range(args.rounds):
            warehouse("plain").unlink(missing_ok=True)
            walls.append(baseline(warehouse("plain"), lake_dir))
        steps[key] = Step(label, min(walls))
        print(f"{label}: {steps[key].wall:.2f}s", flush=True)

    slowest: dict[str, str] = {}
    t0 = time.perf_counter()
    counts = generate(lake, plan, 0, args.rows, args.files)
    print(f"lake: {counts} in {time.perf_counter() - t0:.1f}s under {lake_dir}", flush=True)
    for home in ("run", "build"):  # parse once, untimed: every timed run parses partially
        dbt("parse", homes[home], lake_dir)

    plain_step("plain_full", "plain DuckDB SQL, full")
    dbt_step("run_full", "`dbt run`, full (models only)", "run", "run", None)
    dbt_step("build_full", "`dbt build`, full (models + data tests)", "build", "build", None)
    wall = dbt("run", homes["run"], lake_dir, "--select", "path:analyses")
    steps["noop"] = Step("dbt fixed cost (`dbt run` selecting nothing)", wall)
    print(f"{steps['noop'].label}: {wall:.2f}s", flush=True)
    if mart_fingerprint(warehouse("run")) != mart_fingerprint(warehouse("plain")):
        print("MISMATCH between dbt and the baseline after the full build", file=sys.stderr)
        return 1
    for home in ("run", "build"):
        shutil.copyfile(warehouse(home), snapshots / f"{home}.duckdb")

    # a new micro-batch (a new day), 1 in 1000 of its rows late, into the oldest partition
    t0 = time.perf_counter()
    more = generate(
        lake, plan, args.rows, args.rows + args.increment, max(1, args.files // 100), 1000
    )
    print(f"increment: {more} in {time.perf_counter() - t0:.1f}s", flush=True)
    dbt_step("run_incremental", "`dbt run`, incremental", "run", "run", snapshots / "run.duckdb")
    dbt_step(
        "build_incremental", "`dbt build`, incremental", "build", "build",
        snapshots / "build.duckdb",
    )  # fmt: skip
    plain_step("plain_full_after", "plain DuckDB SQL, full, after the increment")
    for home in ("run", "build"):
        if mart_fingerprint(warehouse(home)) != mart_fingerprint(warehouse("plain")):
            print(f"MISMATCH between dbt {home} and the baseline after the increment",
                  file=sys.stderr)  # fmt: skip
            return 1
    print("marts agree: dbt and plain DuckDB (counts and sums of all six)")

    ratios = {
        "incremental / full, `dbt run`": (
            steps["run_incremental"].wall / steps["run_full"].wall,
            "< 0.1",
        ),
        "incremental / full, `dbt build`": (
            steps["build_incremental"].wall / steps["build_full"].wall,
            "",
        ),
        "incremental / full, `dbt run`, dbt elapsed (no start-up)": (
            (steps["run_incremental"].dbt_elapsed or 0) / (steps["run_full"].dbt_elapsed or 1),
            "",
        ),
        "`dbt run` full / plain DuckDB full": (
            steps["run_full"].wall / steps["plain_full"].wall,
            "< 2",
        ),
    }
    for name, (value, goal) in ratios.items():
        print(f"{name}: {value:.3f} {goal}")

    print(f"slowest models, full `dbt run`: {slowest['run_full']}")
    print(f"slowest models, incremental `dbt run`: {slowest['run_incremental']}")
    if not args.no_results:
        append_results(args, counts, more, steps, ratios, slowest)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def append_results(
    args: argparse.Namespace,
    counts: dict[str, int],
    more: dict[str, int],
    steps: dict[str, Step],
    ratios: dict[str, tuple[float, str]],
    slowest: dict[str, str],
) -> None:
    cmd = (
        f"python -m bench.dbt_bench --rows {args.rows} --increment {args.increment} "
        f"--files {args.files} --rounds {args.rounds}"
    )
    lines = [
        "",
        f"## dbt warehouse build ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"- Machine: {machine()}",
        f"- Software: {versions()}",
        f"- Command: `{cmd}`",
        f"- Lake: Delta tables; {counts['transactions']:,} transaction rows in "
        f"{args.files} commits "
        f"(~1% producer resends), {counts['alerts']:,} alerts, "
        f"{counts['merchant_minute']:,} merchant_minute rows. Increment: "
        f"{more['transactions']:,} transactions, {more['alerts']:,} alerts, "
        f"{more['merchant_minute']:,} merchant_minute rows upserted; a new day, plus late "
        "rows that land in the oldest partition.",
        "- Baseline: the six marts as plain DuckDB SQL (`bench/dbt_baseline.sql`), run by "
        "the duckdb Python API on a fresh file. `dbt run` (models only) is the like-for-like "
        "comparison; `dbt build` adds the 40-odd data tests. The marts of dbt and the "
        "baseline agree (counts and sums), after the full and the incremental build.",
        "- dbt elapsed: run_results.json `elapsed_time` (without interpreter start and parse); "
        "wall minus elapsed is dbt's fixed start-up cost (the no-op row measures it).",
        f"- Each figure is the best of {args.rounds} rounds (the machine is shared); each "
        "full round on a fresh warehouse file, each incremental round on a copy of the "
        "warehouse as the full build left it.",
        "",
        "| step | wall s | dbt elapsed s |",
        "|---|---:|---:|",
    ]
    for step in steps.values():
        elapsed = f"{step.dbt_elapsed:.2f}" if step.dbt_elapsed is not None else ""
        lines.append(f"| {step.label} | {step.wall:.2f} | {elapsed} |")
    lines += ["", "| ratio | value | goal |", "|---|---:|---|"]
    for name, (value, goal) in ratios.items():
        lines.append(f"| {name} | {value:.3f} | {goal} |")
    lines += [
        "",
        f"Slowest models, full `dbt run`: {slowest['run_full']}.",
        f"Slowest models, incremental `dbt run`: {slowest['run_incremental']}.",
        "",
    ]
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
