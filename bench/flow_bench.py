"""Benchmark the payments flow against plain confluent-kafka + pyarrow baselines.

    python -m bench.flow_bench throughput [--events 1000000] [--processes 1,2] [--profile DIR]
    python -m bench.flow_bench latency [--rate 5000] [--seconds 300]
    python -m bench.flow_bench metrics [--events 1000000] [--rounds 2]
    python -m bench.flow_bench join [--events 1000000] [--rounds 2]

throughput: pre-load ``--events`` generated transactions into a fresh copy of the
payments topics (``bench.``-prefixed, deleted at the end), then drain them into
the lake with the flow once per process count in ``--processes`` (recovery on,
settings as configured, each on a fresh lake and consumer group) and with a
baseline, a single plain ``Consumer`` that decodes each message with msgspec,
batches columns and writes a Parquet file every ``flush_rows`` rows with pyarrow
(no validation, dedup, fraud, windows, Delta log or Kafka transactions). Each figure
is events / seconds from launch until the data is durable to the end of the topic:
for the flow, until its Delta table's application transactions reach the end offsets;
for the baseline, until its group offsets (committed after each file) do. Beside each
figure, the CPU seconds the contender, its processes' busiest threads (the workers),
the broker and this benchmark used, and how busy that kept the machine: one process
is bound by its worker thread, two by the machine's cores. Goals (issue 12): one flow
process >= 0.8x the baseline's events/s; two processes >= 1.6x one. ``--profile DIR``
samples every flow process with py-spy (:mod:`bench.profiling`) and appends the top
entries.

latency: produce at a steady ``--rate`` for ``--seconds`` (event times follow the
wall clock) and measure, per message, produce -> alert on the alerts topic and
produce -> row readable in the lake (the Delta commit adding its file), p50, p90,
p99 and max. The baseline is a plain consumer that relays every message to an output
topic and writes Parquet on the same flush interval: Kafka's and the file
cadence's floor. Goals (issue 12): alert p99 < 250 ms; lake p99 < flush interval + 1 s.

metrics: drain the same pre-loaded topic with the flow's metrics off and on (served
and scraped every 5 s), alternating the order; goal: on >= 0.95x off.

join: drain the same pre-loaded topic with the card-profile table empty and full (a
profile per card of the input, computed with polars); goal: with >= 0.8x without.

Runs against ``RIVERBED_KAFKA_BOOTSTRAP`` (or the settings' local broker, which
must be running). Appends a section to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import confluent_kafka
import msgspec
import polars as pl
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from bench import profiling
from flows.payments import (
    ensure_recovery_store,
    flow_commands,
    settings_env,
    snapshot_interval_s,
)
from producers.kafka_loop import PRODUCER_DEFAULTS, produce_when_room
from producers.payments import GeneratorConfig, PaymentsGenerator
from riverbed import features, kafka_admin, lake
from riverbed.broker import listening_pids
from riverbed.contracts.payments import Transaction
from riverbed.kafka_admin import cluster_size, declared_configs, declared_replication
from riverbed.settings import Settings, load_settings
from riverbed.topics import (
    PAYMENTS_ALERTS,
    PAYMENTS_CARD_PROFILES,
    PAYMENTS_DLQ,
    PAYMENTS_TRANSACTIONS,
    topic,
)
from tests.support.monitoring import scrape_target

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
REPO = Path(__file__).resolve().parent.parent
PREFIX = "bench."
SOURCE = PREFIX + PAYMENTS_TRANSACTIONS
ALERTS = PREFIX + PAYMENTS_ALERTS
DLQ = PREFIX + PAYMENTS_DLQ
ECHO = PREFIX + "baseline.echo"
PROFILES = PREFIX + PAYMENTS_CARD_PROFILES  # the flow joins it (empty here)


# -- topics and input ---------------------------------------------------------------------


def recreate_topics(settings: Settings, names: list[str]) -> None:
    admin = kafka_admin.admin_client(settings)
    kafka_admin.delete_topics(admin, names)
    deadline = time.monotonic() + 60
    while True:
        specs = {
            SOURCE: topic(PAYMENTS_TRANSACTIONS).partitions,
            ALERTS: topic(PAYMENTS_ALERTS).partitions,
            DLQ: topic(PAYMENTS_DLQ).partitions,
            ECHO: topic(PAYMENTS_ALERTS).partitions,
            PROFILES: topic(PAYMENTS_CARD_PROFILES).partitions,
        }
        spec = topic(PAYMENTS_TRANSACTIONS)
        rf = declared_replication(settings, spec, cluster_size(settings, admin))
        futures = admin.create_topics(
            [NewTopic(n, specs[n], rf, config=declared_configs(spec, rf)) for n in names]
        )
        try:
            for f in futures.values():
                f.result()
            return
        except confluent_kafka.KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)  # deletion still in progress


def delete_topics(settings: Settings, names: list[str]) -> None:
    kafka_admin.delete_topics(kafka_admin.admin_client(settings), names)


# The pre-load's event time starts at noon (UTC) yesterday, not at "now": which cities
# are awake (so which cards transact, so which rules fire) depends on the hour of the
# day, and the input must not depend on the hour the benchmark runs at. Yesterday, not
# a fixed date: the topics' retention would delete records stamped weeks ago.
def preload_start() -> float:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today - timedelta(days=1) + timedelta(hours=12)).timestamp()


PRELOAD_RATE = 200.0  # events per second of event time, `make run`'s default


def preload_generator(
    settings: Settings,
    seed: int = 7,
    *,
    config: GeneratorConfig | None = None,
    start: float | None = None,
    rate: float = PRELOAD_RATE,
) -> PaymentsGenerator:
    """The generator of the pre-loaded traffic (see :func:`preload`): ``config`` another
    population, ``start`` another first event time, ``rate`` events per second of event
    time."""
    return PaymentsGenerator(
        config or GeneratorConfig.from_settings(settings),
        seed=seed,
        start=preload_start() if start is None else start,
        rate=rate,
    )


def processor_us_per_event(settings: Settings, events: int = 200_000, passes: int = 3) -> float:
    """The machine's speed as the flow feels it: microseconds a generated event takes
    through the payments processor alone (no Kafka, no lake), in 5,000-event batches per
    partition, best of ``passes``.

    The flow is CPU-bound and the baseline is not, so flow / baseline follows the speed
    of a shared machine (the same code took 6.0 and 7.2 µs an event two hours apart on
    2026-12-02); taken in the same run, this says at which speed a section was made.
    """
    from flows.kit.records import SourceBatch
    from flows.payments.config import FlowConfig
    from flows.payments.processor import PartitionProcessor

    generator = preload_generator(settings)
    count = topic(PAYMENTS_TRANSACTIONS).partitions
    parts: dict[int, list] = {p: [] for p in range(count)}
    for event in itertools.islice(generator, events):
        # crc32, not the producers' murmur2: all that matters is a card in one partition
        records = parts[zlib.crc32(event.key or b"") % count]
        records.append((len(records), event.key, event.value, int(generator.clock * 1000)))
    config = FlowConfig.from_settings(settings)
    best = float("inf")
    for _ in range(passes):
        processors = {p: PartitionProcessor(p, config) for p in parts}
        began = time.perf_counter()
        for p, records in parts.items():
            for i in range(0, len(records), 5000):
                chunk = records[i : i + 5000]
                processors[p].process(
                    SourceBatch(p, chunk, chunk[-1][0] + 1), time.time_ns() // 1000
                )
        best = min(best, time.perf_counter() - began)
    return best / events * 1e6


def preload(settings: Settings, events: int, generator: PaymentsGenerator | None = None) -> float:
    """Produce ``events`` generated transactions; seconds.

    The traffic ``riverbed produce`` makes with the settings' population (cards,
    merchants, shares) at 200 events/s of event time from :func:`preload_start`, or
    ``generator``'s (``bench.state_bench``: another population, first event time or
    rate, from :func:`preload_generator`). Each message's Kafka timestamp is the
    generator's clock when it was made, as for a live producer, so the flow's "not in
    the future" check sees what it would live.
    """
    generator = generator or preload_generator(settings)
    producer = Producer({**settings.kafka_client_config(), **PRODUCER_DEFAULTS})
    began = time.monotonic()
    for i, event in enumerate(generator):
        if i == events:
            break
        stamp = int(generator.clock * 1000)
        produce_when_room(producer, SOURCE, event.value, event.key, timestamp=stamp)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0, "pre-load did not complete"
    return time.monotonic() - began


def end_offsets(settings: Settings, name: str) -> dict[int, int]:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": "bench.probe"})
    try:
        parts = consumer.list_topics(name, timeout=30).topics[name].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=30)[1] for p in parts
        }
    finally:
        consumer.close()


def committed(settings: Settings, group: str, name: str, parts: list[int]) -> dict[int, int]:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(name, p) for p in parts], timeout=30)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


# -- the contenders -----------------------------------------------------------------------


def bench_settings(settings: Settings, home: Path, group: str, **overrides: object) -> Settings:
    return load_settings(
        **{
            **{name: getattr(settings, name) for name in settings.model_fields_set},
            "kafka_bootstrap": settings.bootstrap_servers,
            "home": home,
            "consumer_group": group,
            **overrides,
        }
    )


def start_flow(settings: Settings, processes: int, log: Path) -> list[subprocess.Popen]:
    ensure_recovery_store(settings)
    env = {**os.environ, **settings_env(settings)}
    out = open(log, "ab")  # noqa: SIM115 - lives as long as the processes
    return [
        subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        for cmd in flow_commands(settings, processes=processes, topic_prefix=PREFIX)
    ]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


class BaselineDrain:
    """A plain consumer batching the topic into Parquet: the simplest thing that lands data."""

    def __init__(
        self, settings: Settings, out_dir: Path, *, flush_rows: int, flush_interval_s: float
    ) -> None:
        self.settings = settings
        self.out_dir = out_dir
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.stop_event = threading.Event()
        self.on_file: Callable[[list[str]], None] | None = None
        self.echo: Producer | None = None

    def run(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        consumer = Consumer(
            {
                **self.settings.kafka_client_config(),
                "group.id": self.settings.consumer_group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([SOURCE])
        decoder = msgspec.json.Decoder(Transaction)
        cols: dict[str, list] = {k: [] for k in ("id", "card", "merchant", "amount", "time")}
        offsets: dict[int, int] = {}
        last_flush = time.monotonic()
        seq = 0
        try:
            while not self.stop_event.is_set():
                for msg in consumer.consume(5000, 0.05):
                    if msg.error() is not None:
                        continue
                    if self.echo is not None:
                        self.echo.produce(ECHO, msg.value(), msg.key())
                    try:
                        txn = decoder.decode(msg.value())
                    except msgspec.MsgspecError:
                        continue
                    cols["id"].append(txn.transaction_id)
                    cols["card"].append(txn.card_id)
                    cols["merchant"].append(txn.merchant_id)
                    cols["amount"].append(round(txn.amount * 100))
                    cols["time"].append(txn.event_time)
                    offsets[msg.partition()] = msg.offset() + 1
                if self.echo is not None:
                    self.echo.poll(0)
                due = time.monotonic() - last_flush >= self.flush_interval_s
                if cols["id"] and (len(cols["id"]) >= self.flush_rows or due):
                    seq += 1
                    table = pa.table(
                        {
                            "transaction_id": cols["id"],
                            "card_id": cols["card"],
                            "merchant_id": cols["merchant"],
                            "amount": lake.money_from_cents(cols["amount"]),
                            "event_time": cols["time"],
                        }
                    )
                    temp = self.out_dir / f".b{seq:06d}.parquet.tmp"
                    pq.write_table(table, temp)
                    os.replace(temp, self.out_dir / f"b{seq:06d}.parquet")
                    if self.on_file is not None:
                        self.on_file(cols["id"])
                    consumer.commit(
                        offsets=[TopicPartition(SOURCE, p, o) for p, o in offsets.items()],
                        asynchronous=False,
                    )
                    cols = {k: [] for k in cols}
                    last_flush = time.monotonic()
        finally:
            consumer.close()


# -- throughput ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Drain:
    name: str
    seconds: float
    events: int
    cpu_s: float | None = None  # CPU seconds of the contender's processes
    broker_cpu_s: float | None = None  # of the broker(s), over the same span
    # Of cpu_s, each flow process's busiest thread (its Bytewax worker), summed.
    busiest_cpu_s: float | None = None
    bench_cpu_s: float | None = None  # of this benchmark's process, over the same span

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def wait_drained(
    progress: Callable[[], dict[int, int]],
    name: str,
    ends: dict[int, int],
    timeout: float,
    alive: Callable[[], bool],
) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if progress() == ends:
            return time.monotonic() - began
        if not alive():
            raise RuntimeError(f"{name} stopped before draining the topic")
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not drain the topic in {timeout:.0f}s")


def lake_progress(lake_dir: Path, parts: list[int]) -> Callable[[], dict[int, int]]:
    """The next offset per partition the flow's Delta table says it holds.

    Called every 0.1 s while the flow drains, on the cores the flow runs on, so it
    reads the log only when it has a new commit: one handle (opening the table anew
    cost ~22 ms of CPU a time), and a look for the next commit's file first (the Delta
    protocol names commit N ``_delta_log/<N, 20 digits>.json``). Catching up and
    reading six partitions' offsets costs 2-6 ms, most of a drain's ~0.4 s of this
    benchmark's CPU before this check.
    """
    table = None
    log_dir = lake.dataset_dir(lake_dir, "transactions") / "_delta_log"
    offsets: dict[int, int] = {}

    def read() -> dict[int, int]:
        nonlocal table, offsets
        if table is None:
            if not lake.table_exists(lake_dir, "transactions"):
                return {}
            table = lake.open_table(lake_dir, "transactions")
        elif not (log_dir / f"{table.version() + 1:020d}.json").exists():
            return offsets
        table.update_incremental()
        offsets = lake.stored_offsets(table, SOURCE, parts)
        return offsets

    return read


def throughput(
    settings: Settings,
    events: int,
    process_counts: list[int],
    work: Path,
    profile: Path | None = None,
) -> list[Drain]:
    """The flow drained once per process count (each from the start, on a fresh lake and
    consumer group), then the baseline, all on the same pre-loaded topic."""
    recreate_topics(settings, [SOURCE, ALERTS, DLQ, PROFILES])
    print(f"pre-loading {events:,} events ...", flush=True)
    print(f"  done in {preload(settings, events):.1f}s", flush=True)
    ends = end_offsets(settings, SOURCE)
    total = sum(ends.values())

    drains = []
    for processes in process_counts:
        flow_settings = bench_settings(
            settings, work / f"flow{processes}", f"bench.flow{processes}"
        )
        drains.append(
            drain_with_flow(
                flow_settings, ends, processes, work / f"flow{processes}.log",
                f"flow ({processes} process{'es' if processes > 1 else ''}, recovery on)",
                None if profile is None else profile / f"{processes}",
            )
        )  # fmt: skip

    # A group of its own each run: a stale run's commits (a run killed halfway, on a topic
    # recreated with the same offsets) would otherwise look like a drain done in 0.1 s.
    group = f"bench.baseline.{os.getpid()}.{time.time_ns()}"
    base_settings = bench_settings(settings, work / "baseline", group)
    drain = BaselineDrain(
        base_settings,
        work / "baseline" / "lake",
        flush_rows=settings.flush_rows,
        flush_interval_s=settings.flush_interval_s,
    )
    broker = broker_cpu(settings)
    bench = bench_cpu()
    thread = threading.Thread(target=drain.run, daemon=True)
    thread.start()
    try:
        base_s = wait_drained(
            lambda: committed(settings, group, SOURCE, sorted(ends)),
            "the baseline",
            ends,
            1800,
            thread.is_alive,
        )
        # The benchmark's own process: the baseline thread, its librdkafka and pyarrow
        # threads, and this waiting loop (a tenth of a second's sleep between checks).
        cpu_s = bench.used()
    finally:
        drain.stop_event.set()
        thread.join(30)
    baseline = Drain(
        "baseline (confluent-kafka Consumer + pyarrow)", base_s, total, cpu_s, broker.used()
    )
    print(f"  baseline: {baseline.rate:,.0f} events/s ({base_s:.1f}s)", flush=True)
    delete_topics(settings, [SOURCE, ALERTS, DLQ, PROFILES])
    kafka_admin.delete_groups(kafka_admin.admin_client(settings), [group])
    return [*drains, baseline]


class CpuUsed:
    """CPU seconds (user + system) some processes used since this was made (None: no
    process to watch)."""

    def __init__(self, procs: list[psutil.Process]) -> None:
        self._procs = procs
        self._start = self._total()

    def _total(self) -> float:
        total = 0.0
        for proc in self._procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def used(self) -> float | None:
        return self._total() - self._start if self._procs else None


def broker_cpu(settings: Settings) -> CpuUsed:
    """The local broker(s)' CPU from now on (None used: not on this host)."""
    ports = {int(server.rsplit(":", 1)[1]) for server in settings.bootstrap_servers.split(",")}
    return CpuUsed([psutil.Process(pid) for pid in listening_pids(ports)])


def bench_cpu() -> CpuUsed:
    """This benchmark's own CPU from now on: its checks of the lake every tenth of a
    second and its metrics scrapes, which share the cores (and the baseline, which runs
    in it)."""
    return CpuUsed([psutil.Process()])


def busiest_thread_cpu(proc: psutil.Process) -> float:
    """CPU seconds of the process's busiest thread: for a flow process, the thread its
    Bytewax worker runs on, which is what one process's speed is bound by; the rest of
    its CPU (Parquet and Delta commits on the flush thread, librdkafka's and delta-rs's
    threads) can run beside it on another core."""
    return max((t.user_time + t.system_time for t in proc.threads()), default=0.0)


def drain_with_flow(
    settings: Settings,
    ends: dict[int, int],
    processes: int,
    log: Path,
    name: str,
    profile: Path | None = None,
) -> Drain:
    """The flow, launched and run until its lake holds the topic to ``ends``; with
    ``profile``, each flow process is sampled by py-spy into ``profile-<i>.txt`` there."""
    began = time.monotonic()
    broker = broker_cpu(settings)
    bench = bench_cpu()
    procs = start_flow(settings, processes, log)
    watched = [psutil.Process(p.pid) for p in procs]
    samplers = []
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        samplers = [
            profiling.attach(p.pid, profile / f"profile-{i}.txt") for i, p in enumerate(procs)
        ]
    scraping = threading.Event()
    scraper = threading.Thread(target=scrape_while, args=(settings, scraping), daemon=True)
    scraper.start()
    try:
        wait_drained(
            lake_progress(settings.lake_dir, sorted(ends)),
            "the flow",
            ends,
            1800,
            lambda: all(p.poll() is None for p in procs),
        )
        seconds = time.monotonic() - began
        cpu_s = sum(t.user + t.system for t in (p.cpu_times() for p in watched))
        busiest_cpu_s = sum(busiest_thread_cpu(p) for p in watched)
        broker_cpu_s = broker.used()
        bench_cpu_s = bench.used()
    except RuntimeError:
        print(log.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        scraping.set()
        stop(procs)
        for sampler in samplers:
            sampler.wait(60)  # py-spy writes its profile when the process ends
    drain = Drain(
        name, seconds, sum(ends.values()), cpu_s, broker_cpu_s, busiest_cpu_s, bench_cpu_s
    )
    print(f"  {name}: {drain.rate:,.0f} events/s ({seconds:.1f}s)", flush=True)
    return drain


def scrape_while(settings: Settings, done: threading.Event) -> None:
    """Scrape the flow's metrics every 5 s, as Prometheus would (when they are served)."""
    targets = settings.home / "prometheus" / "targets" / "flows"
    while not done.wait(5):
        for target in targets.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                scrape_target(target)


def metrics_cost(
    settings: Settings, events: int, processes: int, work: Path, rounds: int
) -> list[Drain]:
    """The same pre-loaded topic drained by the flow with its metrics off and on
    (served and scraped every 5 s), alternating which goes first; best of ``rounds``."""
    recreate_topics(settings, [SOURCE, ALERTS, DLQ, PROFILES])
    print(f"pre-loading {events:,} events ...", flush=True)
    print(f"  done in {preload(settings, events):.1f}s", flush=True)
    ends = end_offsets(settings, SOURCE)

    def drain(on: bool, round_: int) -> Drain:
        label = "on" if on else "off"
        home = work / f"metrics-{label}-{round_}"
        flow_settings = bench_settings(
            settings, home, f"bench.metrics-{label}-{round_}", flow_metrics=on
        )
        log = work / f"{label}-{round_}.log"
        return drain_with_flow(flow_settings, ends, processes, log, f"flow, metrics {label}")

    drains = alternating(rounds, drain)
    delete_topics(settings, [SOURCE, ALERTS, DLQ, PROFILES])
    return drains


def compared(drains: dict[bool, list[Drain]]) -> tuple[Drain, Drain, float, dict[bool, str]]:
    """The best drain with the setting on and off, the ratio of the medians, and every
    round's rate per setting, as text."""
    on, off = (max(drains[setting], key=lambda d: d.rate) for setting in (True, False))
    median = statistics.median(d.rate for d in drains[True]) / statistics.median(
        d.rate for d in drains[False]
    )
    every = {setting: ", ".join(f"{d.rate:,.0f}" for d in drains[setting]) for setting in drains}
    return on, off, median, every


def alternating(rounds: int, drain: Callable[[bool, int], Drain]) -> dict[bool, list[Drain]]:
    """``drain(setting, round)`` for both settings, ``rounds`` times, the order
    alternating between rounds (off first, then on first...); the drains by setting."""
    drains: dict[bool, list[Drain]] = {True: [], False: []}
    for round_ in range(rounds):
        for setting in (False, True) if round_ % 2 == 0 else (True, False):
            drains[setting].append(drain(setting, round_))
    return drains


def report_metrics_cost(
    drains: dict[bool, list[Drain]], events: int, processes: int, rounds: int
) -> str:
    on, off, median, every = compared(drains)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""
## Payments flow: drain with its metrics on vs off ({when})

- machine: {machine()}
- {events:,} generated transactions pre-loaded once into a fresh 6-partition topic, drained
  into a fresh lake by the flow ({processes} process(es), recovery on) with
  RIVERBED_FLOW_METRICS off, then on (served, and scraped every 5 s as Prometheus would);
  the order alternates between rounds; best of {rounds} per setting

| flow | seconds | events/s |
|---|---:|---:|
| {on.name} | {on.seconds:.1f} | {on.rate:,.0f} |
| {off.name} | {off.seconds:.1f} | {off.rate:,.0f} |

Ratio on / off: **{on.rate / off.rate:.3f}** (goal >= 0.95); of the medians: {median:.3f}.
Every round, events/s: on {every[True]}; off {every[False]} (in the order run).

Reproduce: `python -m bench.flow_bench metrics --events {events} --rounds {rounds}`
"""


def join_cost(settings: Settings, events: int, processes: int, work: Path, rounds: int) -> str:
    """The same pre-loaded topic drained with the card-profile table empty and full (a
    profile per card, computed with polars from the pre-loaded events, as the batch
    layer would), alternating which goes first; the RESULTS.md section."""
    recreate_topics(settings, [SOURCE, ALERTS, DLQ, PROFILES])
    print(f"pre-loading {events:,} events ...", flush=True)
    print(f"  done in {preload(settings, events):.1f}s", flush=True)
    ends = end_offsets(settings, SOURCE)
    profiles = preloaded_profiles(settings, events)

    def drain(full: bool, round_: int) -> Drain:
        recreate_topics(settings, [PROFILES])
        if full:
            features.publish_card_profiles(settings, profiles, topic=PROFILES)
        name = f"join-{int(full)}-{round_}"
        flow_settings = bench_settings(settings, work / name, f"bench.{name}")
        label = "flow, with profiles" if full else "flow, without"
        return drain_with_flow(flow_settings, ends, processes, work / f"{name}.log", label)

    drains = alternating(rounds, drain)
    delete_topics(settings, [SOURCE, ALERTS, DLQ, PROFILES])
    with_, without, median, every = compared(drains)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""
## Payments flow: drain with the card-profile join, full vs empty table ({when})

- machine: {machine()}
- {events:,} generated transactions pre-loaded once; {profiles.height:,} card profiles
  (polars, from those events) in `payments.card_profiles` for the "with" runs, an empty
  topic for the others; {processes} process(es), recovery on; order alternates; best of {rounds}

| flow | seconds | events/s |
|---|---:|---:|
| {with_.name} | {with_.seconds:.1f} | {with_.rate:,.0f} |
| {without.name} | {without.seconds:.1f} | {without.rate:,.0f} |

Ratio with / without: **{with_.rate / without.rate:.3f}** (goal >= 0.8);
of the medians: {median:.3f}.
Every round, events/s: with {every[True]}; without {every[False]} (in the order run).

Reproduce: `python -m bench.flow_bench join --events {events} --rounds {rounds}`
"""


def preloaded_profiles(settings: Settings, events: int, seed: int = 7) -> pl.DataFrame:
    """The card profiles of what :func:`preload` produced (the same seed and start)."""
    generator = PaymentsGenerator(
        GeneratorConfig.from_settings(settings), seed=seed, start=preload_start(), rate=PRELOAD_RATE
    )
    rows = [
        msgspec.json.decode(e.value)
        for e in itertools.islice(generator, events)
        if e.valid and not e.resent
    ]
    frame = (
        pl.DataFrame(rows)
        .lazy()
        .with_columns(pl.col("event_time").str.to_datetime(time_zone="UTC"))
    )
    return features.profiles_from(frame, settings.profile_window_days, settings.profile_min_txns)


# -- latency -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


LATENCY_WARMUP_S = 4.0


@dataclass
class LatencyRun:
    name: str
    alert_ms: list[float]
    lake_ms: list[float]


class SteadyProducer:
    """Generated transactions at a steady rate, event times on the wall clock; remembers
    when each transaction id was sent."""

    def __init__(self, settings: Settings, rate: float, seconds: float) -> None:
        self.settings = settings
        self.rate = rate
        self.seconds = seconds
        self.sent: dict[str, float] = {}

    def run(self) -> None:
        # Enough cards that normal traffic respects the card gap at this rate.
        config = GeneratorConfig(cards=max(5000, int(self.rate * 25)))
        generator = PaymentsGenerator(
            config, seed=11, start=time.time(), rate=self.rate, wall_clock=time.time
        )
        producer = Producer(
            {**self.settings.kafka_client_config(), **PRODUCER_DEFAULTS, "linger.ms": 1}
        )
        began = time.monotonic()
        tick = 0.01
        n = 0
        events = iter(generator)
        while time.monotonic() - began < self.seconds:
            due = int((time.monotonic() - began) * self.rate)
            while n < due:
                event = next(events)
                producer.produce(SOURCE, event.value, event.key)
                self.sent[event.transaction_id] = time.time()
                n += 1
            producer.poll(0)
            time.sleep(tick)
        producer.flush(60)


def watch_alerts(settings: Settings, topic_name: str, stop: threading.Event,
                 seen: dict[str, float]) -> None:  # fmt: skip
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"bench.watch.{time.time()}",
            "auto.offset.reset": "latest",
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.subscribe([topic_name])
    try:
        while not stop.is_set():
            msg = consumer.poll(0.05)
            if msg is None or msg.error() is not None:
                continue
            now = time.time()
            try:
                body = json.loads(msg.value())
                txn = body["transaction_id"] if isinstance(body, dict) else None
            except (ValueError, KeyError):
                txn = None  # the baseline relays invalid messages too
            if txn is None:
                continue
            seen.setdefault(txn, now)
    finally:
        consumer.close()


def watch_lake(lake_dir: Path, stop: threading.Event, seen: dict[str, float]) -> None:
    """When each transaction becomes readable: the Delta commit that adds its file."""
    known: set[str] = set()
    table = None
    while not stop.is_set():
        if table is None and lake.table_exists(lake_dir, "transactions"):
            table = lake.open_table(lake_dir, "transactions")
        if table is not None:
            table.update_incremental()
            now = time.time()
            root = lake.dataset_dir(lake_dir, "transactions")
            for path in pa.table(table.get_add_actions()).column("path").to_pylist():
                if path in known:
                    continue
                known.add(path)
                ids = pq.read_table(root / path, columns=["transaction_id"])
                for txn in ids.column(0).to_pylist():
                    seen.setdefault(txn, now)
        time.sleep(0.02)


def latency_flow(settings: Settings, rate: float, seconds: float, work: Path) -> LatencyRun:
    recreate_topics(settings, [SOURCE, ALERTS, DLQ, PROFILES])
    flow_settings = bench_settings(settings, work / "flow-latency", "bench.flow.latency")
    procs = start_flow(flow_settings, 1, work / "flow-latency.log")
    stop_event = threading.Event()
    alerts: dict[str, float] = {}
    visible: dict[str, float] = {}
    watchers = [
        threading.Thread(target=watch_alerts, args=(settings, ALERTS, stop_event, alerts)),
        threading.Thread(target=watch_lake, args=(flow_settings.lake_dir, stop_event, visible)),
    ]
    try:
        time.sleep(LATENCY_WARMUP_S)  # the flow is up and polling before the clock starts
        for w in watchers:
            w.start()
        producer = SteadyProducer(settings, rate, seconds)
        producer.run()
        time.sleep(settings.flush_interval_s + 3)
    finally:
        stop_event.set()
        for w in watchers:
            w.join(10)
        stop(procs)
    sent = producer.sent
    return LatencyRun(
        "flow",
        [(t - sent[x]) * 1000 for x, t in alerts.items() if x in sent],
        [(t - sent[x]) * 1000 for x, t in visible.items() if x in sent],
    )


def latency_baseline(settings: Settings, rate: float, seconds: float, work: Path) -> LatencyRun:
    recreate_topics(settings, [SOURCE, ECHO])
    base_settings = bench_settings(settings, work / "base-latency", "bench.baseline.latency")
    drain = BaselineDrain(
        base_settings,
        work / "base-latency" / "lake",
        flush_rows=settings.flush_rows,
        flush_interval_s=settings.flush_interval_s,
    )
    drain.echo = Producer({**settings.kafka_client_config(), "linger.ms": 5})
    stop_event = threading.Event()
    echoed: dict[str, float] = {}
    visible: dict[str, float] = {}

    def on_file(ids: list[str]) -> None:
        now = time.time()
        for txn in ids:
            visible.setdefault(txn, now)

    drain.on_file = on_file
    threads = [
        threading.Thread(target=drain.run),
        threading.Thread(target=watch_alerts, args=(settings, ECHO, stop_event, echoed)),
    ]
    try:
        for t in threads:
            t.start()
        time.sleep(2)
        producer = SteadyProducer(settings, rate, seconds)
        producer.run()
        time.sleep(settings.flush_interval_s + 2)
    finally:
        stop_event.set()
        drain.stop_event.set()
        for t in threads:
            t.join(10)
    sent = producer.sent
    delete_topics(settings, [ECHO])
    return LatencyRun(
        "baseline (Consumer relay to a topic + Parquet on the same interval)",
        [(t - sent[x]) * 1000 for x, t in echoed.items() if x in sent],
        [(t - sent[x]) * 1000 for x, t in visible.items() if x in sent],
    )


# -- results -------------------------------------------------------------------------------


def machine() -> str:
    return (
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}, Python "
        f"{platform.python_version()}, confluent-kafka {confluent_kafka.version()} "
        f"(librdkafka {confluent_kafka.libversion()[0]}); broker, flow and baseline on one host; "
        # The machine is shared: what else ran is part of every figure.
        f"load average at the end {' / '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


def append_results(text: str) -> None:
    with open(RESULTS, "a", encoding="utf-8") as handle:
        handle.write("\n" + text.strip() + "\n")


def _what(drain: Drain) -> str:
    """ "flow (2 processes, recovery on)" -> "2 processes"."""
    return drain.name.split("(")[1].split(",")[0]


def _speed(processor_us: float | None) -> str:
    if processor_us is None:
        return ""
    return (
        f"; its speed before the drains: the payments processor alone took {processor_us:.2f} "
        "µs an event (`processor_us_per_event`: 200,000 generated events, best of 3), so "
        "compare sections at the same speed"
    )


def _cpu(seconds: float | None, span: float) -> str:
    return "" if seconds is None else f"{seconds:.1f} ({seconds / span:.2f})"


def _busy(drain: Drain) -> str:
    """The share of the machine's cores busy with the contender, the broker and this
    benchmark while it drained: near 1, a faster run needs less CPU, not more processes."""
    if drain.cpu_s is None:
        return ""
    used = drain.cpu_s + (drain.broker_cpu_s or 0.0) + (drain.bench_cpu_s or 0.0)
    return f"{used / (drain.seconds * (os.cpu_count() or 1)):.2f}"


_THROUGHPUT_HEADER = (
    "| contender | seconds | events/s | / baseline | CPU s (cores) | busiest threads "
    "| broker CPU s | benchmark CPU s | machine busy |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def report_throughput(
    settings: Settings,
    drains: list[Drain],
    events: int,
    process_counts: list[int],
    processor_us: float | None = None,
) -> str:
    *flows, baseline = drains
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = "\n".join(
        f"| {d.name} | {d.seconds:.1f} | {d.rate:,.0f} | {d.rate / baseline.rate:.2f} | "
        f"{_cpu(d.cpu_s, d.seconds)} | {_cpu(d.busiest_cpu_s, d.seconds)} | "
        f"{_cpu(d.broker_cpu_s, d.seconds)} | {_cpu(d.bench_cpu_s, d.seconds)} | "
        f"{_busy(d)} |"
        for d in drains
    )
    first = flows[0]
    ratios = [
        f"flow ({_what(first)}) / baseline: **{first.rate / baseline.rate:.2f}** (goal >= 0.8)"
    ]
    ratios += [
        f"{_what(other)} / {_what(first)}: **{other.rate / first.rate:.2f}** (goal for 2: >= 1.6)"
        for other in flows[1:]
    ]
    counts = ",".join(str(n) for n in process_counts)
    return f"""
## Payments flow: throughput vs a plain consumer (throughput, {when})

- machine: {machine()}{_speed(processor_us)}
- {events:,} generated transactions pre-loaded into a fresh 6-partition topic; each
  contender drains it into Parquet from launch until its consumer group's offsets reach
  the end (start-up included)
- flow: `flows.payments` with recovery; flush every {settings.flush_interval_s:g}s or
  {settings.flush_rows:,} rows, a recovery snapshot every
  {snapshot_interval_s(settings)}s; validation, resends, fraud, windows, DLQ,
  alerts in Kafka transactions and Delta commits included
- baseline: one `confluent_kafka.Consumer`, msgspec decode, columns -> pyarrow Parquet
  every {settings.flush_rows:,} rows, commit after each file; nothing else
- CPU: seconds of CPU (user + system) the contender's processes, the broker and this
  benchmark (its checks of the lake and metrics scrapes; the baseline runs inside it)
  used while it drained, and in brackets the average number of cores busy; "busiest
  threads": of the contender's CPU, each flow process's busiest thread (its Bytewax
  worker, and in one process the start-up's imports), summed; "machine busy": all of
  it over the {os.cpu_count()} cores

{_THROUGHPUT_HEADER}
{rows}

{"; ".join(ratios)}.

Reproduce: `python -m bench.flow_bench throughput --events {events} --processes {counts}`
"""


ALERT_GOAL_MS = 250.0  # issue 12: produce -> alert p99 at 5,000 events/s


def _spread(values: list[float]) -> str:
    """p50 / p90 / p99 / max, in ms."""
    qs = [percentile(values, q) for q in (0.5, 0.9, 0.99)]
    return " / ".join(f"{v:,.0f}" for v in [*qs, max(values, default=float("nan"))])


def report_latency(settings: Settings, runs: list[LatencyRun], rate: float, seconds: float) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        f"| {run.name} | {len(run.alert_ms):,} | {_spread(run.alert_ms)} | "
        f"{len(run.lake_ms):,} | {_spread(run.lake_ms)} |"
        for run in runs
    ]
    flow = runs[0]
    goal_lake = (settings.flush_interval_s + 1) * 1000
    alert_p99, lake_p99 = percentile(flow.alert_ms, 0.99), percentile(flow.lake_ms, 0.99)
    # Epochs count from the flow's start, LATENCY_WARMUP_S before the producer's.
    snapshots = int((LATENCY_WARMUP_S + seconds) // snapshot_interval_s(settings))
    return f"""
## Payments flow: latency at a steady {rate:,.0f} events/s (latency, {when})

- machine: {machine()}
- {seconds:g}s of generated transactions at {rate:,.0f}/s (event time = wall clock), each
  contender on its own fresh topics; flush interval {settings.flush_interval_s:g}s; the
  flow's recovery snapshot every {snapshot_interval_s(settings)}s ({snapshots} in the
  measured window: each stalls the flow while it pickles its state)
- alert: produce -> the alert on `payments.alerts`, read committed (baseline: the
  relayed message); lake: produce -> the Delta commit adding the row's file (baseline:
  file renamed)

| contender | alerts | alert ms p50 / p90 / p99 / max | lake rows | lake ms p50 / p90 / p99 / max |
|---|---:|---:|---:|---:|
{chr(10).join(rows)}

Goals: alert p99 < {ALERT_GOAL_MS:,.0f} ms (flow: **{alert_p99:,.0f} ms**); lake
p99 < {goal_lake:,.0f} ms (flush interval + 1 s; flow: **{lake_p99:,.0f} ms**).

Reproduce: `python -m bench.flow_bench latency --rate {rate:g} --seconds {seconds:g}`
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flow_bench", description=__doc__)
    parser.add_argument("what", choices=["throughput", "latency", "metrics", "join"])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--processes",
        default="1",
        help="flow processes; throughput takes a list (1,2: both, in the same run)",
    )
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument(
        "--seconds",
        type=float,
        default=300.0,
        help="latency: how long to produce (the default holds two of the flow's recovery "
        "snapshots, which the tail of the distribution is about)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="metrics, join: rounds per setting")
    parser.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    parser.add_argument(
        "--profile",
        type=Path,
        help="throughput: sample the flow with py-spy into this folder, print the top entries",
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    work = Path(
        tempfile.mkdtemp(
            prefix="flow-bench-", dir=settings.home if settings.home.exists() else None
        )
    )
    try:
        if args.what == "throughput":
            counts = [int(n) for n in args.processes.split(",")]
            speed = processor_us_per_event(settings)
            print(f"machine speed: the processor alone, {speed:.2f} µs an event", flush=True)
            drains = throughput(settings, args.events, counts, work, args.profile)
            text = report_throughput(settings, drains, args.events, counts, speed)
            if args.profile is not None:
                for raw in sorted(args.profile.glob("*/profile-*.txt")):
                    text += (
                        f"\n\nWhere the flow's time goes ({raw.parent.name} process(es), "
                        f"{raw.stem}): " + profiling.table(raw)
                    )
        elif args.what == "metrics":
            processes = int(args.processes)
            drains = metrics_cost(settings, args.events, processes, work, args.rounds)
            text = report_metrics_cost(drains, args.events, processes, args.rounds)
        elif args.what == "join":
            text = join_cost(settings, args.events, int(args.processes), work, args.rounds)
        else:
            runs = [
                latency_flow(settings, args.rate, args.seconds, work),
                latency_baseline(settings, args.rate, args.seconds, work),
            ]
            delete_topics(settings, [SOURCE, ALERTS, DLQ, PROFILES])
            text = report_latency(settings, runs, args.rate, args.seconds)
        print(text)
        if not args.no_results:
            append_results(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
