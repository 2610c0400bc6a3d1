"""Running each contender over the preloaded topic, timing it, and reading back what it wrote.

Every contender is timed from its launch (start-up included) until what it writes is
written, each by the end signal it has:

- the bare consumer, Riverbed and Quix Streams commit Kafka offsets only after their
  output is durable, so: until their committed offsets reach the end of the topic (for
  Riverbed the offsets its Delta commits record, as ``bench.flow_bench`` measures it, and
  then until its ``merchant_minute`` holds every on-time row of its lake, since the last
  windows close only when the partitions go idle; for Quix its consumer group's offsets
  on the source topic *and* on its repartition topic, since its windows are computed
  after that second hop);
- Pathway keeps its progress to itself, so: until its output files stop growing, the
  time of the last growth once none of them grew for :data:`QUIET_S` seconds and its
  transactions file holds as many rows as the input has valid transactions (or for
  :data:`QUIET_LONG_S`, whatever it holds).

Then the contender is stopped and its outputs are read back as plain rows and windows
for the oracle.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from bench.flow_bench import (
    ALERTS,
    DLQ,
    REPO,
    SOURCE,
    BaselineDrain,
    bench_settings,
    committed,
    end_offsets,
    lake_progress,
    recreate_topics,
    start_flow,
    stop,
    wait_drained,
)
from bench.peers.oracle import Aggregate, InputEvent, WindowKey
from riverbed import lake
from riverbed.kafka_admin import admin_client, cluster_metadata
from riverbed.settings import Settings

QUIET_S = 10.0
QUIET_LONG_S = 120.0
TIMEOUT_S = 1800.0
JOBS = Path(__file__).resolve().parent


@dataclass
class Outcome:
    """One run of one contender: its time and what it wrote."""

    name: str
    seconds: float
    transaction_ids: list[str]  # one per row written to its transactions sink
    windows: dict[WindowKey, Aggregate] | None  # None: it computes no windows
    late_reported: int | None = None  # events it says it dropped or flagged as late
    # The order its windowing step saw the events in, where Kafka shows it (Quix: its
    # repartition topic), so the oracle can also be replayed in that order.
    arrival: list[InputEvent] | None = None
    # Where its engine advances time per batch (Pathway's minibatches), each arrival's batch.
    arrival_batches: list[int] | None = None
    note: str = ""  # an intermediate time worth knowing
    dead_letters: int | None = None  # invalid messages it filed (None: it files none)


# -- the bare consumer -----------------------------------------------------------------------


def run_bare(settings: Settings, ends: dict[int, int], work: Path, group: str) -> Outcome:
    """``bench.flow_bench``'s baseline: a Consumer batching the topic into Parquet."""
    out = work / "lake"
    drain = BaselineDrain(
        bench_settings(settings, work, group),
        out,
        flush_rows=settings.flush_rows,
        flush_interval_s=settings.flush_interval_s,
    )
    began = time.monotonic()
    thread = threading.Thread(target=drain.run, daemon=True)
    thread.start()
    try:
        _until_committed(settings, group, ends, "the bare consumer", thread.is_alive)
        seconds = time.monotonic() - began
    finally:
        drain.stop_event.set()
        thread.join(30)
    return Outcome("bare consumer", seconds, _parquet_ids(out), None)


# -- Riverbed ---------------------------------------------------------------------------------


def run_riverbed(settings: Settings, ends: dict[int, int], work: Path, group: str) -> Outcome:
    """The payments flow, started as ``bench.flow_bench`` starts it (one process)."""
    flow_settings = bench_settings(settings, work, group)
    lake_dir = flow_settings.lake_dir
    recreate_topics(settings, [ALERTS, DLQ])  # empty: each run's dead letters are its own
    log = work / "flow.log"
    began = time.monotonic()
    procs = start_flow(flow_settings, 1, log)
    alive = lambda: all(p.poll() is None for p in procs)  # noqa: E731
    try:
        wait_drained(lake_progress(lake_dir, sorted(ends)), "the flow", ends, TIMEOUT_S, alive)
        lake_s = time.monotonic() - began
        # The windows of the last minutes close when the partitions go idle: everything
        # is written once merchant_minute holds every on-time row of the (now complete) lake.
        on_time = _on_time_rows(lake_dir)
        _wait_for(lambda: _windowed_rows(lake_dir) == on_time, 120, alive)
        seconds = time.monotonic() - began
    except RuntimeError:
        print(log.read_text()[-3000:])
        raise
    finally:
        stop(procs)
    txns = lake.read_table(lake_dir, "transactions", columns=["transaction_id", "late"])
    rows = lake.read_table(
        lake_dir,
        "merchant_minute",
        columns=["merchant_id", "window_start", "txn_count", "amount_sum"],
    ).to_pylist()
    windows = {
        (r["merchant_id"], _ms(r["window_start"])): (r["txn_count"], round(r["amount_sum"] * 100))
        for r in rows
    }
    late = pc.sum(txns.column("late").cast("int64")).as_py() or 0
    ids = txns.column("transaction_id").to_pylist()
    name = "Riverbed (`riverbed flow run payments`)"
    note = f"lake offsets at the end after {lake_s:.1f}s"
    dead = len(read_committed(settings, DLQ))
    return Outcome(name, seconds, ids, windows, late, note=note, dead_letters=dead)


def _on_time_rows(lake_dir: Path) -> int:
    late = lake.read_table(lake_dir, "transactions", columns=["late"]).column(0)
    return len(late) - (pc.sum(late.cast("int64")).as_py() or 0)


def _windowed_rows(lake_dir: Path) -> int:
    """The transactions counted in merchant_minute's windows."""
    counts = lake.read_table(lake_dir, "merchant_minute", columns=["txn_count"]).column(0)
    return pc.sum(counts).as_py() or 0


# -- Quix Streams -----------------------------------------------------------------------------


def run_quix(
    settings: Settings, python: Path, ends: dict[int, int], work: Path, group: str
) -> Outcome:
    out = work / "out"
    cmd = [
        str(python), str(JOBS / "quix_job.py"),
        "--brokers", settings.bootstrap_servers, "--topic", SOURCE,
        "--dlq", f"{group}.dlq", "--group", group, "--out", str(out),
    ]  # fmt: skip
    began = time.monotonic()
    proc = _launch(cmd, work / "quix.log")
    try:
        _until_committed(settings, group, ends, "Quix Streams", lambda: proc.poll() is None)
        source_s = time.monotonic() - began
        alive = lambda: proc.poll() is None  # noqa: E731
        _wait_for(lambda: _repartition_consumed(settings, group), TIMEOUT_S, alive)
        seconds = time.monotonic() - began
    except RuntimeError:
        print((work / "quix.log").read_text()[-3000:])
        raise
    finally:
        _end(proc, signal.SIGTERM)
    stats = json.loads((out / "stats.json").read_text()) if (out / "stats.json").exists() else {}
    windows: dict[WindowKey, Aggregate] = {}
    for path in sorted((out / "windows").rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            value = json.loads(line)["_value"]
            key = (value["merchant_id"], value["start"])
            if key in windows:
                raise RuntimeError(f"Quix wrote window {key} twice")
            windows[key] = (value["count"], value["amount_cents"])
    ids = _parquet_ids(out / "transactions")
    arrival = _repartitioned(settings, group)
    name = "Quix Streams (exactly-once)"
    note = f"source offsets at the end after {source_s:.1f}s"
    dead = len(read_committed(settings, f"{group}.dlq"))
    late = stats.get("late")
    return Outcome(name, seconds, ids, windows, late, arrival, note=note, dead_letters=dead)


def _repartition_topics(settings: Settings, group: str) -> list[str]:
    names = cluster_metadata(admin_client(settings)).topics
    return sorted(n for n in names if n.startswith("repartition__") and group in n)


def _repartitioned(settings: Settings, group: str) -> list[InputEvent]:
    """What Quix's windowing step read: its repartition topic's committed records, each
    partition in offset order (a merchant's events all in one partition)."""
    events = []
    for name in _repartition_topics(settings, group):
        for msg in read_committed(settings, name):
            value = json.loads(msg.value())
            events.append(
                InputEvent(
                    msg.partition(),
                    msg.offset(),
                    value["transaction_id"],
                    value["merchant_id"],
                    value["event_ms"],
                    value["amount_cents"],
                )
            )
    return events


def read_committed(settings: Settings, topic: str) -> list[Message]:
    """Every committed record of ``topic`` (one written in Kafka transactions: its end
    offsets count commit markers, so it is read until each partition says it is at its end)."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "bench.peers.reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    records: list[Message] = []
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        at_end: set[int] = set()
        while len(at_end) < len(parts):
            for msg in consumer.consume(10_000, 1.0):
                error = msg.error()
                if error is None:
                    records.append(msg)
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
    finally:
        consumer.close()
    return records


def _repartition_consumed(settings: Settings, group: str) -> bool:
    """Quix's group has consumed its repartition topic to the end. The topic is written in
    Kafka transactions, so each partition ends with a commit marker that is never
    delivered: consumed to the end is committed at the end or one short of it."""
    names = _repartition_topics(settings, group)
    if not names:
        return False
    for name in names:
        ends = end_offsets(settings, name)
        done = committed(settings, group, name, sorted(ends))
        if any(end > 0 and done.get(p, -1) < end - 1 for p, end in ends.items()):
            return False
    return True


# -- Pathway ----------------------------------------------------------------------------------


def run_pathway(
    settings: Settings,
    python: Path,
    work: Path,
    group: str,
    cutoff_ms: int | None,
    expected_rows: int,
) -> Outcome:
    out = work / "out"
    cmd = [
        str(python), str(JOBS / "pathway_job.py"),
        "--brokers", settings.bootstrap_servers, "--topic", SOURCE,
        "--group", group, "--out", str(out),
    ]  # fmt: skip
    if cutoff_ms is not None:
        cmd += ["--cutoff-ms", str(cutoff_ms)]
    files = [out / name for name in ("transactions.jsonl", "windows.jsonl", "dlq.jsonl")]
    began = time.monotonic()
    proc = _launch(cmd, work / "pathway.log")
    try:
        seconds = _until_quiet(files, began, proc, expected_rows)
    except RuntimeError:
        print((work / "pathway.log").read_text()[-3000:])
        raise
    finally:
        _end(proc, signal.SIGTERM)
    txns = net_rows(out / "transactions.jsonl")
    windows: dict[WindowKey, Aggregate] = {}
    for row in net_rows(out / "windows.jsonl"):
        key = (row["merchant_id"], _ms(datetime.fromisoformat(row["window_start"])))
        if key in windows:
            raise RuntimeError(f"Pathway holds two values for window {key}")
        windows[key] = (row["count"], row["amount_cents"])
    name = "Pathway, " + (f"cutoff {cutoff_ms / 1000:g} s" if cutoff_ms else "no cutoff")
    ids = [row["transaction_id"] for row in txns]
    arrival = _pathway_arrival(out / "transactions.jsonl")
    batches = [batch for batch, _ in arrival]
    events = [e for _, e in arrival]
    note = f"{len(set(batches)):,} minibatch(es)"
    dead = len(net_rows(out / "dlq.jsonl"))
    return Outcome(name, seconds, ids, windows, None, events, batches, note, dead)


def _pathway_arrival(path: Path) -> list[tuple[int, InputEvent]]:
    """Each transaction with the minibatch (Pathway's ``time``) that first inserted it, in
    batch order: the order and the batches its windows saw them in."""
    first: dict[str, tuple[int, InputEvent]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["diff"] != 1 or row["transaction_id"] in first:
            continue
        event = InputEvent(
            0, 0, row["transaction_id"], row["merchant_id"], row["event_ms"], row["amount_cents"]
        )
        first[row["transaction_id"]] = (row["time"], event)
    return sorted(first.values(), key=lambda pair: pair[0])


def _until_quiet(
    files: list[Path], began: float, proc: subprocess.Popen, expected_rows: int
) -> float:
    """Seconds from ``began`` to the last growth of ``files``, once they stayed the same
    size for QUIET_S and the first holds ``expected_rows`` lines, or for QUIET_LONG_S
    whatever it holds. Pathway writes once per minibatch, and on a large backlog a
    minibatch can take longer than QUIET_S to process: the row count tells a pause from
    the end (the oracle's count only decides how long to wait, never the time measured)."""
    sizes: list[int] = []
    last_growth = began
    counted_at = 0.0  # when the rows were last counted: a large file, counted once a second
    while time.monotonic() - began < TIMEOUT_S:
        if proc.poll() is not None:
            raise RuntimeError(f"the job exited with {proc.returncode}")
        now_sizes = [f.stat().st_size if f.exists() else 0 for f in files]
        now = time.monotonic()
        if now_sizes != sizes:
            sizes, last_growth = now_sizes, now
        elif now - last_growth >= QUIET_LONG_S:
            return last_growth - began
        elif now - last_growth >= QUIET_S and now - counted_at >= 1:
            counted_at = now
            if _lines(files[0]) >= expected_rows:
                return last_growth - began
        time.sleep(0.1)
    raise RuntimeError(f"the outputs still grew after {TIMEOUT_S:.0f}s")


def _lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def net_rows(path: Path) -> list[dict]:
    """The rows left in a Pathway JSON-lines change stream once retractions are applied."""
    net: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        row = json.loads(line)
        diff = row.pop("diff")
        row.pop("time", None)
        net[json.dumps(row, sort_keys=True)] += diff
    if any(n not in (0, 1) for n in net.values()):
        raise RuntimeError(f"{path.name}: a row is left more than once or retracted too often")
    return [json.loads(row) for row, n in net.items() if n == 1]


# -- shared -----------------------------------------------------------------------------------


def _launch(cmd: list[str], log: Path) -> subprocess.Popen:
    """A peer job in its own venv; the repository root on its path for the contract only."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = open(log, "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(cmd, env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT)


def _end(proc: subprocess.Popen, sig: signal.Signals) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _until_committed(
    settings: Settings, group: str, ends: dict[int, int], name: str, alive: Callable[[], bool]
) -> None:
    """Until ``group``'s committed offsets on the source topic are ``ends``."""
    progress = lambda: committed(settings, group, SOURCE, sorted(ends))  # noqa: E731
    wait_drained(progress, name, ends, TIMEOUT_S, alive)


def _wait_for(done: Callable[[], bool], timeout: float, alive: Callable[[], bool]) -> None:
    began = time.monotonic()
    while not done():
        if not alive():
            raise RuntimeError("the contender stopped before its windows were written")
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"the windows were not all written in {timeout:.0f}s")
        time.sleep(0.2)


def _parquet_ids(directory: Path) -> list[str]:
    ids: list[str] = []
    for path in sorted(directory.rglob("*.parquet")):
        ids.extend(pq.read_table(path, columns=["transaction_id"]).column(0).to_pylist())
    return ids


def _ms(stamp: datetime) -> int:
    return round(stamp.timestamp() * 1000)
