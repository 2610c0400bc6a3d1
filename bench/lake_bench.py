"""Benchmark the lake's Delta tables: commit latency over a table's life, and files.

    python -m bench.lake_bench commits [--commits 10000] [--rows 200] [--pace 0.12] [--flush 5]
    python -m bench.lake_bench files [--rate 1000] [--seconds 3600] [--flush 5]
    python -m bench.lake_bench readers [--rows 4800000] [--commits 400]

commits: one :class:`riverbed.lake.TableWriter` appends ``--commits`` small batches to
a fresh ``transactions`` table, as the flow does (six partitions' offsets as
application transactions in every commit, the table's checkpoint and log-retention
properties), compacting every ``--compact-every`` commits as the hourly upkeep job
would. It lives the table's life faster than a flow does (a commit every ``--pace`` s,
not every ``--flush`` s) and shortens the table's time-based retention properties by
the same factor, so the table keeps as many commits' worth of log and tombstones as a
flow's does. Baseline: the p99 of the first 100 commits, in the same run. Goal: the p99
of the last 100 commits <= 1.5x the baseline (latency must not grow with age).

files: an hour of input at ``--rate`` events/s, committed every ``--flush`` seconds
(one commit per flush, as a flow process makes), then compacted as the hourly
``lake_upkeep`` job does. Goal: <= 24 files per dataset and day after compaction,
and a full scan of the table (DuckDB ``delta_scan``) <= 1.2x a scan of the same rows
in one Parquet file (the baseline, written in the same run).

readers: the same table read by DuckDB's delta extension and by dbt-duckdb's ``delta``
plugin's way (a delta-rs pyarrow dataset registered in DuckDB), full and incremental:
how dbt's reader was chosen.

Appends a section to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from riverbed import lake

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TOPIC = "payments.transactions"
PARTITIONS = 6
START_US = 1_795_000_000_000_000  # 2026-11-18 (UTC)


def batch(first_offset: int, rows: int, start_us: int, step_us: int) -> pa.Table:
    """``rows`` transactions spread over the six partitions, event times from start_us."""
    per = rows // PARTITIONS
    parts = [p for p in range(PARTITIONS) for _ in range(per)]
    offsets = [first_offset + i for _p in range(PARTITIONS) for i in range(per)]
    n = len(parts)
    return pa.table(
        {
            "transaction_id": [f"t{p}-{o}" for p, o in zip(parts, offsets, strict=True)],
            "card_id": [
                f"card-{(o * 7 + p) % 20000:05d}" for p, o in zip(parts, offsets, strict=True)
            ],
            "merchant_id": [f"m-{o % 500:03d}" for o in offsets],
            "mcc": ["5411"] * n,
            "amount": lake.money_from_cents([(o * 37) % 90_000 + 100 for o in offsets]),
            "currency": ["EUR"] * n,
            "country": ["FR"] * n,
            "lat": [48.85] * n,
            "lon": [2.35] * n,
            "channel": ["pos"] * n,
            "event_time": lake.utc_micros([start_us + i * step_us for i in range(n)]),
            "late": [False] * n,
            "_topic": [TOPIC] * n,
            "_partition": pa.array(parts, pa.int32()),
            "_offset": pa.array(offsets, pa.int64()),
        }
    )


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def commits(n: int, rows: int, compact_every: int, pace: float, flush: float, work: Path) -> str:
    # A flow commits once per flush (5 s); the bench commits every `pace` seconds, so it
    # runs the table's life `scale` times faster and shortens the time-based retention
    # properties by the same factor: what is kept then matches, in commits, what a flow's
    # table keeps (an hour of log and tombstones = 720 commits at one per 5 s).
    scale = flush / pace
    log_s = lake.LOG_RETENTION_S / scale
    tomb_s = lake.TOMBSTONE_RETENTION_S / scale
    # In this process only: the table is created with them, and compaction keeps them.
    lake.TABLE_PROPERTIES["delta.logRetentionDuration"] = f"interval {log_s:.0f} seconds"
    lake.TABLE_PROPERTIES["delta.deletedFileRetentionDuration"] = f"interval {tomb_s:.0f} seconds"
    writer = lake.TableWriter(work, "transactions")
    apps = [lake.app_id(TOPIC, p) for p in range(PARTITIONS)]
    writer.claim(apps)
    per = rows // PARTITIONS
    latencies: list[float] = []
    began = time.monotonic()
    next_at = began
    for i in range(n):
        data = batch(i * per, rows, START_US + i * 5_000_000, 1000)
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at = max(next_at + pace, time.monotonic())
        t = time.perf_counter()
        writer.append(data, {app: (i + 1) * per for app in apps})
        latencies.append((time.perf_counter() - t) * 1000)
        if compact_every and (i + 1) % compact_every == 0:
            lake.compact(work, "transactions")  # the hourly lake_upkeep job, in between
        if (i + 1) % 1000 == 0:
            print(f"  {i + 1:,} commits, last 100 p99 {p99(latencies[-100:]):.1f} ms", flush=True)
    elapsed = time.monotonic() - began
    first, last = p99(latencies[:100]), p99(latencies[-100:])
    ratio = last / first
    log_files = len(list((work / "payments" / "transactions" / "_delta_log").iterdir()))
    live_files = len(writer.table.file_uris())
    thousands = "".join(
        f"| {k:,} | {statistics.median(latencies[k - 100 : k]):.1f} "
        f"| {p99(latencies[k - 100 : k]):.1f} |\n"
        for k in range(1000, n + 1, 1000)
    )
    return f"""
### Delta commit latency over {n:,} commits ({_now()}, {_machine()})

`python -m bench.lake_bench commits --commits {n} --rows {rows} --compact-every {compact_every}
--pace {pace} --flush {flush}`: one TableWriter appends {rows} rows and six application
transactions per commit (what a flow process does every flush), one commit every {pace} s
at most, {elapsed:.0f} s in all; a checkpoint every
{lake.TABLE_PROPERTIES["delta.checkpointInterval"]} commits; compaction every {compact_every}
commits (the hourly `lake_upkeep` at one commit per {flush:g} s flush). The run is the
table's life {scale:.0f}x faster than a flow's ({n:,} commits = {n * flush / 3600:.1f} hours
at one per {flush:g} s), so the table's retention properties are {scale:.0f}x shorter
(log {log_s:.0f} s and tombstones {tomb_s:.0f} s for the lake's
{lake.LOG_RETENTION_S} s and {lake.TOMBSTONE_RETENTION_S} s): the same number of commits'
worth is kept. Latency in ms; the p99 of 100 commits is the one that wrote a checkpoint.

| commits | p50 ms | p99 ms |
|---|---:|---:|
| first 100 (baseline) | {statistics.median(latencies[:100]):.1f} | {first:.1f} |
{thousands}| last 100 | {statistics.median(latencies[-100:]):.1f} | {last:.1f} |

Ratio last / first p99: **{ratio:.2f}** (goal <= 1.5). Left at the end: {log_files:,} entries
in `_delta_log`, {live_files:,} live data files.
"""


def files(rate: int, seconds: int, flush_s: int, work: Path) -> str:
    writer = lake.TableWriter(work, "transactions")
    apps = [lake.app_id(TOPIC, p) for p in range(PARTITIONS)]
    writer.claim(apps)
    rows = rate * flush_s
    per = rows // PARTITIONS
    flushes = seconds // flush_s
    step_us = 1_000_000 // rate
    began = time.monotonic()
    for i in range(flushes):
        data = batch(i * per, rows, START_US + i * flush_s * 1_000_000, step_us)
        writer.append(data, {app: (i + 1) * per for app in apps})
    write_s = time.monotonic() - began
    before = lake.summary(work, "transactions")
    compaction = lake.compact(work, "transactions")
    after = lake.summary(work, "transactions")
    assert before is not None and after is not None and after.rows == before.rows

    table = lake.open_table(work, "transactions")
    days: dict[str, int] = {}
    for path in pa.table(table.get_add_actions()).column("path").to_pylist():
        day = path.split("event_date=", 1)[1][:10]
        days[day] = days.get(day, 0) + 1
    one_file = work / "one-file.parquet"
    pq.write_table(lake.read_table(work, "transactions"), one_file)

    con = lake.connect_duckdb()
    query = (
        "select count(*), count(distinct card_id), sum(amount), min(event_time), max(event_time) "
        "from {}"
    )
    delta_s = _best(lambda: con.sql(query.format(lake.scan_sql(work, "transactions"))).fetchall())
    file_s = _best(lambda: con.sql(query.format(f"read_parquet('{one_file}')")).fetchall())
    same = (
        con.sql(query.format(lake.scan_sql(work, "transactions"))).fetchall()
        == con.sql(query.format(f"read_parquet('{one_file}')")).fetchall()
    )
    assert same, "the two scans disagree"
    worst_day = max(days.values())
    return f"""
### Lake files after an hour at {rate:,} events/s ({_now()}, {_machine()})

`python -m bench.lake_bench files --rate {rate} --seconds {seconds} --flush {flush_s}`:
{before.rows:,} rows in {flushes:,} commits ({write_s:.0f} s), then `lake.compact`.

| | files | per day (worst) |
|---|---:|---:|
| before compaction | {before.files:,} | |
| after compaction | {after.files:,} | **{worst_day}** (goal <= 24) |

Compaction removed {compaction.files_removed:,} and added {compaction.files_added:,} files.
Full scan (count, distinct cards, sum, min/max time), best of 5: Delta table
{delta_s * 1000:.0f} ms, the same rows in one Parquet file (baseline) {file_s * 1000:.0f} ms:
ratio **{delta_s / file_s:.2f}** (goal <= 1.2).
"""


def readers(rows: int, commits_n: int, work: Path) -> str:
    """DuckDB's delta extension vs dbt-duckdb's ``delta`` plugin way (a pyarrow dataset
    from delta-rs, registered in DuckDB), over the same table, in one process."""
    writer = lake.TableWriter(work, "transactions")
    apps = [lake.app_id(TOPIC, p) for p in range(PARTITIONS)]
    writer.claim(apps)
    per_commit = rows // commits_n
    per = per_commit // PARTITIONS
    for i in range(commits_n):
        data = batch(i * per, per_commit, START_US + i * 5_000_000, 1000)
        writer.append(data, {app: (i + 1) * per for app in apps})
    last = commits_n * per
    watermark = last - per * max(1, commits_n // 100)  # the newest 1 % of the offsets
    full = "select count(*), sum(amount), count(distinct transaction_id) from {}"
    incremental = "select count(*), sum(amount) from {} where _offset >= " + str(watermark)
    con = lake.connect_duckdb()
    path = lake.dataset_dir(work, "transactions")

    def extension(sql: str) -> list:
        return con.sql(sql.format(lake.scan_sql(work, "transactions"))).fetchall()

    def plugin(sql: str) -> list:
        # What dbt-duckdb's delta plugin does for a source: DeltaTable(...).to_pyarrow_dataset()
        con.register("plugin_source", DeltaTable(path).to_pyarrow_dataset())
        return con.sql(sql.format("plugin_source")).fetchall()

    assert extension(full) == plugin(full) and extension(incremental) == plugin(incremental)
    times = {
        (name, what): f"{_best(lambda f=f, q=q: f(q)) * 1000:.0f}"
        for name, f in (("extension", extension), ("plugin", plugin))
        for what, q in (("full", full), ("incremental", incremental))
    }
    ext_full, ext_incr = times[("extension", "full")], times[("extension", "incremental")]
    plug_full, plug_incr = times[("plugin", "full")], times[("plugin", "incremental")]
    title = "Reading the lake from DuckDB: delta extension vs the dbt-duckdb delta plugin"
    return f"""
### {title} ({_now()}, {_machine()})

`python -m bench.lake_bench readers --rows {rows} --commits {commits_n}`: {rows:,} rows
in {commits_n} commits (uncompacted); best of 5. Full: count, sum, distinct ids. Incremental:
the rows past an offset watermark (the newest 1 %), as dbt's incremental facts read them.

| reader | full ms | incremental ms |
|---|---:|---:|
| DuckDB `delta_scan` (extension from the `duckdb-ext-delta` package) | {ext_full} | {ext_incr} |
| dbt-duckdb `delta` plugin (delta-rs pyarrow dataset) | {plug_full} | {plug_incr} |

dbt reads the lake with the extension (`dbt/profiles.yml`, `riverbed/dbt_plugin.py`).
"""


def _best(run: object, times: int = 5) -> float:
    best = float("inf")
    for _ in range(times):
        t = time.perf_counter()
        run()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t)
    return best


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _machine() -> str:
    import os

    return f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("commits")
    c.add_argument("--commits", type=int, default=10_000)
    c.add_argument("--rows", type=int, default=200)
    c.add_argument("--compact-every", type=int, default=720)
    c.add_argument("--pace", type=float, default=0.12, help="seconds between commits")
    c.add_argument("--flush", type=float, default=5, help="the flow's flush interval simulated")
    f = sub.add_parser("files")
    f.add_argument("--rate", type=int, default=1000)
    f.add_argument("--seconds", type=int, default=3600)
    f.add_argument("--flush", type=int, default=5)
    r = sub.add_parser("readers")
    r.add_argument("--rows", type=int, default=4_800_000)
    r.add_argument("--commits", type=int, default=400)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="riverbed-lake-bench-") as tmp:
        if args.what == "commits":
            text = commits(
                args.commits, args.rows, args.compact_every, args.pace, args.flush, Path(tmp)
            )
        elif args.what == "readers":
            text = readers(args.rows, args.commits, Path(tmp))
        else:
            text = files(args.rate, args.seconds, args.flush, Path(tmp))
    print(text)
    with open(RESULTS, "a") as out:
        out.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
