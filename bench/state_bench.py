"""Scale with state: the payments flow's throughput, recovery snapshot and restart time
as the population of cards and merchants grows.

    python -m bench.state_bench [--events 2000000] [--cards 10000,100000,1000000]
        [--merchants 1000,10000,100000] [--rate 200] [--dense-rate 0] [--extra 1000]
        [--no-results]

For each population (the cards varied with the settings' merchants, then the merchants
varied with the settings' cards; with ``--dense-rate``, the most cards once more at that
rate of event time, so that the card TTL holds them all): pre-load ``--events`` generated
transactions of that population into fresh ``bench.``-prefixed topics (``bench.flow_bench``'s
pre-load, ``--rate`` events/s of event time) and

- drain them with the flow (1 process, recovery on, as ``bench.flow_bench throughput``):
  events/s from launch until the lake's Delta commits reach the end offsets;
- once it is stopped (SIGINT), read its recovery store (SQLite files under
  ``<home>/flows/payments/recovery``): the snapshot a restart resumes from is, per step
  and key, the newest row of the ``snaps`` table; its size is the sum of those blobs
  (``ser_change``, Bytewax's pickle of the step's snapshot: for the processors the
  source's :class:`~flows.kit.processing.PartitionState`, for the window merger
  :mod:`flows.kit.steps`' pickle of the whole object). Also the files'
  size as they are and after ``VACUUM INTO`` a copy, and what the processors hold
  (cards, resend ids, open windows), decoded here;
- produce ``--extra`` more events (1,000) just after the pre-load's event time,
  restart the flow on the same home and time it from launch until the lake holds the
  new end offsets. The flow logs at DEBUG here, so its log says when each snapshot was
  taken, how large it was and how long the pickling took (:mod:`flows.kit.processing`,
  :mod:`flows.kit.steps`): the
  time spent snapshotting during the drain and the first snapshot after the restart
  (the state loaded and one epoch run) come from there; the decoding of the state
  alone (both unpickles, as a resume does) is timed in this process.

Distinct cards and merchants are counted in the lake after the drain: the generator
draws a card at random among those rested, so fewer distinct cards appear than it has
when the events are not several times the cards.

Runs against ``RIVERBED_KAFKA_BOOTSTRAP`` (or the settings' local broker, which must be
running). Appends a section to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from bench.flow_bench import (
    ALERTS,
    DLQ,
    PRELOAD_RATE,
    PROFILES,
    SOURCE,
    Drain,
    append_results,
    bench_settings,
    delete_topics,
    drain_with_flow,
    end_offsets,
    machine,
    preload,
    preload_generator,
    preload_start,
    recreate_topics,
)
from flows.kit.processing import PartitionState
from flows.payments import recovery_dir, snapshot_interval_s
from flows.payments.config import FlowConfig
from flows.payments.fraud import encode_cards
from flows.payments.processor import PartitionProcessor
from flows.payments.windows import WindowMerger
from producers.payments import GeneratorConfig
from riverbed import lake
from riverbed.settings import Settings, load_settings

DEFAULT_EVENTS = 2_000_000
EXTRA_EVENTS = 1_000
MB = 1_000_000

# -- pure helpers ------------------------------------------------------------------------


def counts(text: str) -> list[int]:
    """``"10000,100000,1e6"`` -> [10000, 100000, 1000000]."""
    return [int(float(part)) for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class Population:
    cards: int
    merchants: int
    rate: float  # events per second of event time


def populations(
    cards: list[int],
    merchants: list[int],
    default_cards: int,
    default_merchants: int,
    rate: float,
    dense_rate: float = 0.0,
) -> list[Population]:
    """What to run: each card count at the default merchants, then each merchant count at
    the default cards, at ``rate``; a population listed twice runs once. With
    ``dense_rate``, the largest card count once more at that rate."""
    runs = [Population(c, default_merchants, rate) for c in cards]
    runs += [Population(default_cards, m, rate) for m in merchants]
    if dense_rate and cards and dense_rate != rate:
        runs.append(Population(max(cards), default_merchants, dense_rate))
    return list(dict.fromkeys(runs))


def latest_snapshots(conn: sqlite3.Connection) -> dict[tuple[str, str], tuple[int, bytes | None]]:
    """Per (step, key) of a recovery partition: its newest snapshot (epoch, blob); a None
    blob is a state the step discarded."""
    rows = conn.execute(
        "SELECT step_id, state_key, snap_epoch, ser_change FROM snaps AS s WHERE snap_epoch = "
        "(SELECT MAX(snap_epoch) FROM snaps WHERE step_id = s.step_id AND state_key = s.state_key)"
    )
    return {(step, key): (epoch, blob) for step, key, epoch, blob in rows}


_LOG_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def log_fields(line: str) -> dict[str, str]:
    """A logfmt line (:mod:`riverbed.logs`) as its fields, quotes removed."""
    out = {}
    for key, value in _LOG_FIELD.findall(line):
        if value.startswith('"'):
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key] = value
    return out


def log_time(fields: dict[str, str]) -> float | None:
    """The ``ts`` of a log line, seconds since the epoch."""
    ts = fields.get("ts")
    if ts is None:
        return None
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


@dataclass
class SnapshotLog:
    """What the flow's DEBUG log says about its snapshots (``flows.kit.steps``)."""

    taken: int = 0  # snapshots of all stateful pickled steps
    ms: float = 0.0  # pickling time, summed
    largest: int = 0  # bytes of the largest processor snapshot
    first_at: float | None = None  # ts of the first processor snapshot

    @classmethod
    def parse(cls, lines: list[str], since: float = 0.0) -> SnapshotLog:
        out = cls()
        for line in lines:
            if "msg=snapshot" not in line:
                continue
            fields = log_fields(line)
            at = log_time(fields)
            if fields.get("msg") != "snapshot" or at is None or at < since:
                continue
            out.taken += 1
            out.ms += float(fields.get("ms", 0))
            if fields.get("state") == "PartitionProcessor":
                out.largest = max(out.largest, int(fields.get("bytes", 0)))
                if out.first_at is None:
                    out.first_at = at
        return out


# -- the recovery store ------------------------------------------------------------------


@dataclass
class StoreSize:
    """The recovery store after a clean stop, and what its newest snapshot holds."""

    blob_bytes: dict[str, int]  # per step: the newest snapshot's blobs, summed over keys
    file_bytes: int  # the SQLite files as they are
    vacuumed_bytes: int  # the same after VACUUM INTO a copy
    rows: int  # rows of snaps (every epoch still kept)
    decode_s: float  # both unpickles of every newest blob, as a resume does
    encode_s: float  # pickling the processors and merger again (one epoch's snapshots)
    cards: int = 0
    resend_ids: int = 0
    velocity_times: int = 0
    open_windows: int = 0
    window_cards: int = 0  # entries of the open windows' distinct-card sets
    merger_windows: int = 0  # the merger's open and closed windows
    cards_bytes: int = 0  # msgpack of the processors' cards (encode_cards)

    @property
    def total_bytes(self) -> int:
        return sum(self.blob_bytes.values())


def measure_store(directory: Path, work: Path, config: FlowConfig) -> StoreSize:
    files = sorted(directory.glob("part-*.sqlite3"))
    blobs: dict[str, int] = {}
    rows = 0
    latest: list[tuple[str, bytes]] = []
    vacuumed = 0
    for path in files:
        conn = sqlite3.connect(path)
        try:
            rows += conn.execute("SELECT COUNT(*) FROM snaps").fetchone()[0]
            for (step, _key), (_epoch, blob) in latest_snapshots(conn).items():
                if blob is not None:
                    blobs[step] = blobs.get(step, 0) + len(blob)
                    latest.append((step, blob))
            copy = work / f"vacuum-{path.name}"
            copy.unlink(missing_ok=True)
            conn.execute("VACUUM INTO ?", (str(copy),))
            vacuumed += copy.stat().st_size
            copy.unlink()
        finally:
            conn.close()
    began = time.perf_counter()
    states = []
    for step, blob in latest:
        value = pickle.loads(blob)  # Bytewax's own serialisation of the snapshot
        if isinstance(value, PartitionState):  # flows.kit.processing: the source's
            value = pickle.loads(value.processor)
        elif isinstance(value, bytes):  # flows.kit.steps: the pickled object
            value = pickle.loads(value)
        if isinstance(value, PartitionProcessor):
            value.configure(config)  # as flows.kit.processing does on a restore
        states.append((step, value))
    decode_s = time.perf_counter() - began
    size = StoreSize(
        blob_bytes=blobs,
        file_bytes=sum(p.stat().st_size for p in files),
        vacuumed_bytes=vacuumed,
        rows=rows,
        decode_s=decode_s,
        encode_s=0.0,
    )
    began = time.perf_counter()
    for _step, state in states:
        if hasattr(state, "cards") or hasattr(state, "closed"):
            pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    size.encode_s = time.perf_counter() - began
    for _step, state in states:
        _count_state(state, size)
    return size


def _count_state(state: object, size: StoreSize) -> None:
    if isinstance(state, PartitionProcessor):
        size.cards += len(state.cards)
        size.resend_ids += sum(len(c.ids) for c in state.cards.values())
        size.velocity_times += sum(len(c.velocity_times) for c in state.cards.values())
        size.open_windows += len(state.windows.open)
        size.window_cards += sum(len(w.cards) for w in state.windows.open.values())
        size.cards_bytes += len(encode_cards(state.cards))
    elif isinstance(state, WindowMerger):
        size.merger_windows += state.window_count()


# -- one population ------------------------------------------------------------------------


@dataclass
class StateRun:
    population: Population
    events: int
    load: float  # the machine's 1-minute load average when the drain started
    drain: Drain
    distinct_cards: int
    distinct_merchants: int
    windows: int  # distinct (merchant, minute) among the lake's rows
    event_hours: float
    store: StoreSize
    drain_snapshots: SnapshotLog
    restart_s: float  # launch -> the lake holds the extra batch
    restart_first_snapshot_s: float | None  # launch -> the first processor snapshot
    extra: int

    @property
    def snapshot_share(self) -> float:
        """Share of the drain's wall time spent pickling snapshots (flows.kit.steps)."""
        return self.drain_snapshots.ms / 1000 / self.drain.seconds


def run_population(
    settings: Settings, population: Population, events: int, extra: int, work: Path
) -> StateRun:
    cards, merchants, rate = population.cards, population.merchants, population.rate
    name = f"c{cards}-m{merchants}-r{rate:g}"
    config = replace(GeneratorConfig.from_settings(settings), cards=cards, merchants=merchants)
    recreate_topics(settings, [SOURCE, ALERTS, DLQ, PROFILES])
    print(
        f"{cards:,} cards, {merchants:,} merchants, {rate:g} ev/s of event time: "
        f"pre-loading {events:,} events",
        flush=True,
    )
    seconds = preload(settings, events, preload_generator(settings, config=config, rate=rate))
    print(f"  done in {seconds:.1f}s", flush=True)
    ends = end_offsets(settings, SOURCE)
    home = work / name
    flow_settings = bench_settings(settings, home, f"bench.state.{name}", log_level="DEBUG")
    log = work / f"{name}.log"
    began = time.time()
    load = os.getloadavg()[0]
    drain = drain_with_flow(flow_settings, ends, 1, log, "flow (1 process, recovery on)")
    drain_snaps = SnapshotLog.parse(log.read_text().splitlines(), since=began)

    table = lake.read_table(
        flow_settings.lake_dir, "transactions", columns=["card_id", "merchant_id", "event_time"]
    )
    distinct_cards = pc.count_distinct(table["card_id"]).as_py()
    distinct_merchants = pc.count_distinct(table["merchant_id"]).as_py()
    newest = pc.max(table["event_time"]).as_py().timestamp()
    minute = pc.divide(table["event_time"].cast(pa.int64()), 60_000_000)
    windows = (
        pa.table({"merchant": table["merchant_id"], "minute": minute})
        .group_by(["merchant", "minute"])
        .aggregate([])
        .num_rows
    )
    del table, minute
    store = measure_store(recovery_dir(flow_settings), work, FlowConfig.from_settings(settings))
    print(
        f"  {distinct_cards:,} distinct cards, {distinct_merchants:,} merchants; snapshot "
        f"{store.total_bytes / MB:.1f} MB ({store.cards:,} cards, {store.resend_ids:,} ids, "
        f"{store.open_windows:,} open windows), files {store.file_bytes / MB:.1f} MB",
        flush=True,
    )

    # Restart: a small batch just after the pre-load's event time, on the same home.
    # The same seed: the same population (cards in the same cities); ids differ with start.
    preload(
        settings, extra, preload_generator(settings, config=config, start=newest + 1, rate=rate)
    )
    ends = end_offsets(settings, SOURCE)
    log_start = log.stat().st_size
    wall = time.time()
    restart = drain_with_flow(flow_settings, ends, 1, log, "flow restarted (whole topic / s)")
    with open(log, encoding="utf-8") as handle:
        handle.seek(log_start)
        restart_snaps = SnapshotLog.parse(handle.read().splitlines(), since=wall)
    first = None if restart_snaps.first_at is None else restart_snaps.first_at - wall
    shown = "none" if first is None else f"{first:.1f}s"
    print(f"  restart -> lake {restart.seconds:.1f}s; first snapshot after {shown}", flush=True)
    shutil.rmtree(home, ignore_errors=True)
    return StateRun(
        population=population,
        events=events,
        load=load,
        drain=drain,
        distinct_cards=distinct_cards,
        distinct_merchants=distinct_merchants,
        windows=windows,
        event_hours=(newest - preload_start()) / 3600,
        store=store,
        drain_snapshots=drain_snaps,
        restart_s=restart.seconds,
        restart_first_snapshot_s=first,
        extra=extra,
    )


# -- results -------------------------------------------------------------------------------


POPULATION_COLUMNS = ("cards", "merchants", "ev/s of event time")
STATE_COLUMNS = (
    *POPULATION_COLUMNS,
    "hours of event time",
    "distinct cards",
    "distinct merchants",
    "windows",
    "events/s",
    "cards in state",
    "resend ids",
    "open windows",
    "merger windows",
)
STORE_COLUMNS = (
    *POPULATION_COLUMNS,
    "snapshot MB",
    "cards MB",
    "files MB",
    "pickling s (share)",
    "encode / decode ms",
    "restart -> lake s",
    "first snapshot s",
)


def header(columns: tuple[str, ...]) -> str:
    """A Markdown table's head, every column right-aligned."""
    return f"| {' | '.join(columns)} |\n|{'---:|' * len(columns)}"


def report(settings: Settings, runs: list[StateRun], argv: list[str]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    events = runs[0].events if runs else 0
    extra = runs[0].extra if runs else 0
    state_rows, store_rows = [], []
    for r in runs:
        p, s = r.population, r.store
        head = f"| {p.cards:,} | {p.merchants:,} | {p.rate:,.0f} "
        state_rows.append(
            f"{head}| {r.event_hours:.1f} | {r.distinct_cards:,} | {r.distinct_merchants:,} "
            f"| {r.windows:,} | **{r.drain.rate:,.0f}** | {s.cards:,} | {s.resend_ids:,} "
            f"| {s.open_windows:,} | {s.merger_windows:,} |"
        )
        first = "-" if r.restart_first_snapshot_s is None else f"{r.restart_first_snapshot_s:.1f}"
        store_rows.append(
            f"{head}| **{s.total_bytes / MB:.1f}** | {s.cards_bytes / MB:.1f} "
            f"| {s.vacuumed_bytes / MB:.1f} / {s.file_bytes / MB:.1f} "
            f"| {r.drain_snapshots.ms / 1000:.1f} ({r.snapshot_share:.0%}) "
            f"| {s.encode_s * 1000:,.0f} / {s.decode_s * 1000:,.0f} "
            f"| **{r.restart_s:.1f}** | {first} |"
        )
    loads = ", ".join(f"{r.load:.1f}" for r in runs)
    command = " ".join(["python -m bench.state_bench", *argv])
    return f"""
## Payments flow: scale with state, cards and merchants (state_bench, {when})

- machine: {machine()}
- per population, {events:,} generated transactions (`bench.flow_bench`'s pre-load, seed 7,
  at the given events/s of event time) in fresh 6-partition topics, drained by the flow
  (1 process, recovery on, a snapshot every {snapshot_interval_s(settings)} s) from
  launch until the lake holds the end offsets; the cards varied at the settings'
  {settings.producer_merchants:,} merchants, the merchants at the settings'
  {settings.producer_cards:,} cards
- distinct cards and merchants, windows (distinct merchant and minute): counted in the
  lake's transactions; cards in state, their resend ids, the processors' open windows
  and the merger's windows: decoded from the recovery store after the stop
- snapshot MB: the newest `snaps` blob per step and key, summed (what a restart loads;
  per processor, its pickle with the cards as msgpack); cards MB: that msgpack alone;
  files MB: the SQLite files after `VACUUM INTO` a copy / as left
- pickling: the flow's own `snapshot` log lines during the drain (`flows.kit.steps`),
  summed, and their share of the drain's seconds; encode / decode ms: the newest
  snapshot pickled again / unpickled (both layers, as a resume does) in the bench
  process, once
- restart: after a SIGINT stop, {extra:,} more events just after the pre-load's event
  time, the flow launched again on the same home: seconds until the lake holds them;
  first snapshot: until it logs its first processor snapshot (state loaded, one epoch run)
- 1-minute load average at the start of each drain (2 cores, shared): {loads}

{header(STATE_COLUMNS)}
{chr(10).join(state_rows)}

{header(STORE_COLUMNS)}
{chr(10).join(store_rows)}

Reproduce: `{command}`
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.state_bench", description=__doc__)
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--cards", type=counts, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--merchants", type=counts, default=[1_000, 10_000, 100_000])
    parser.add_argument(
        "--rate", type=float, default=PRELOAD_RATE, help="events/s of event time (200)"
    )
    parser.add_argument(
        "--dense-rate",
        type=float,
        default=0.0,
        help="also the most cards at this events/s of event time (0: not)",
    )
    parser.add_argument("--extra", type=int, default=EXTRA_EVENTS, help="events before restart")
    parser.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    settings = load_settings()
    todo = populations(
        args.cards,
        args.merchants,
        settings.producer_cards,
        settings.producer_merchants,
        args.rate,
        args.dense_rate,
    )
    home = settings.home if settings.home.exists() else None
    with tempfile.TemporaryDirectory(
        prefix="state-bench-", dir=home, ignore_cleanup_errors=True
    ) as work:
        runs = [run_population(settings, p, args.events, args.extra, Path(work)) for p in todo]
    delete_topics(settings, [SOURCE, ALERTS, DLQ, PROFILES])
    text = report(settings, runs, sys.argv[1:] if argv is None else argv)
    print(text)
    if not args.no_results:
        append_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
