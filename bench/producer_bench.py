"""Benchmark the payments producer (generation included) against Kafka's own Java producer.

    python -m bench.producer_bench [--events 2000000] [--rounds 1] [--kafka-libs DIR]

Both run on the same broker (``RIVERBED_KAFKA_BOOTSTRAP``, or the settings' local
broker), each into a fresh topic of its own with the partitions of
``payments.transactions``, with the same producer settings (acks=all,
idempotence, linger.ms, batch.size, compression) and records of the same size
(the mean size of our encoded transactions), keyed over as many keys as there
are cards. Ours also keeps one request in flight per broker (PRODUCER_DEFAULTS says
why: librdkafka lost an acknowledged event with five); the Java client keeps its
default of five. The baseline is ``org.apache.kafka.tools.ProducerPerformance``
(kafka-producer-perf-test) sending pre-made random payloads; ours generates
every transaction it sends. The goal (issue 12): ours >= 0.8x the baseline's events/s.

By default (``--pin``, on a machine of two or more CPUs with the broker on it) each
producer runs alone on the last CPU and the broker's processes on the others, for
the bench's duration (their affinity is put back afterwards). Unpinned, on two cores,
the Java tool spreads over both (its sender thread beside the broker) and its figure
swings with what the broker leaves it: 81,000-185,000 events/s within one hour on
2026-12-01. Pinned, both producers get the same one core and the broker never takes
it from them. ``--no-pin`` measures the shared way.

Prints both figures and their ratio, and beside each the CPU time its process used
per event (all its threads: the Java tool's sender, librdkafka's), and appends a
section to ``bench/RESULTS.md``.
The bench topics are deleted at the end.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import confluent_kafka
import psutil
from confluent_kafka.admin import NewTopic

from producers.kafka_loop import PRODUCER_DEFAULTS
from producers.payments import GeneratorConfig, PaymentsGenerator, produce_payments
from riverbed.broker import listening_pids
from riverbed.kafka_admin import (
    admin_client,
    cluster_size,
    declared_configs,
    declared_replication,
)
from riverbed.settings import Settings, load_settings
from riverbed.topics import PAYMENTS_TRANSACTIONS, topic

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# The producer settings both sides share (ours come from PRODUCER_DEFAULTS).
SHARED_PRODUCER_PROPS = (
    "acks",
    "enable.idempotence",
    "linger.ms",
    "batch.size",
    "compression.type",
)
_JAVA_SUMMARY = re.compile(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)")


@dataclass(frozen=True)
class Figure:
    name: str
    events_per_s: float
    mb_per_s: float
    cpu_us_per_event: float  # CPU time of the producer's process, all its threads
    detail: str = ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings()
    if settings.kafka_security_protocol != "PLAINTEXT":
        print("the bench passes only bootstrap.servers to the Java tool: use a PLAINTEXT broker")
        return 2
    libs = find_kafka_libs(settings, args.kafka_libs)
    record_size = mean_message_size(settings)
    print(f"broker {settings.bootstrap_servers}, {args.events:,} events of {record_size} bytes")
    java_runs: list[Figure] = []
    python_runs: list[Figure] = []
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    names = [f"bench.producer.{stamp}.{i}" for i in range(2 * args.rounds)]
    cores = producer_cores(settings) if args.pin else None
    with bench_topics(settings, names), broker_kept_off(cores):
        if cores:
            print(f"  producers on CPU {cores.producer}, the broker on CPUs {cores.broker_list}")
        # Alternate the two, so neither always runs on a warmer broker.
        for java_topic, python_topic in zip(names[::2], names[1::2], strict=True):
            java_runs.append(run_java(settings, libs, java_topic, args.events, record_size, cores))
            print(f"  {_line(java_runs[-1])}")
            python_runs.append(run_python(settings, python_topic, args.events, record_size, cores))
            print(f"  {_line(python_runs[-1])}")
    java = max(java_runs, key=lambda f: f.events_per_s)
    ours = max(python_runs, key=lambda f: f.events_per_s)
    ratio = ours.events_per_s / java.events_per_s
    print(f"ratio Python / Java: {ratio:.2f} (goal >= 0.8)")
    if not args.no_results:
        append_results(settings, args, record_size, java, ours, ratio, libs, cores)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.producer_bench", description=__doc__)
    # Fewer than ~2M and the figures mostly measure start-up: the JVM's JIT and
    # the connections and producer id both producers set up before the first batch.
    parser.add_argument("--events", type=int, default=2_000_000, help="events per producer run")
    parser.add_argument("--rounds", type=int, default=1, help="runs per side; the best counts")
    parser.add_argument("--kafka-libs", type=Path, help="Kafka's libs/ (default: the local one)")
    parser.add_argument("--no-results", action="store_true", help="don't append to RESULTS.md")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each producer alone on the last CPU, the local broker on the others (default)",
    )
    return parser.parse_args(argv)


# --- setup ----------------------------------------------------------------------------------


def find_kafka_libs(settings: Settings, given: Path | None) -> Path:
    """Kafka's jars: --kafka-libs, else the local broker's (fetched from Maven if needed)."""
    from riverbed.kafka_jars import KafkaJars

    libs = given or KafkaJars(settings).fetch()
    if not any(libs.glob("kafka-tools-*.jar")):
        raise SystemExit(f"no Kafka tools jars in {libs}; pass --kafka-libs DIR")
    return libs


def mean_message_size(settings: Settings, sample: int = 20_000) -> int:
    """Mean bytes of our encoded transactions: the Java tool sends records this big."""
    generator = PaymentsGenerator(
        GeneratorConfig.from_settings(settings),
        seed=0,
        start=time.time(),
        rate=settings.producer_rate,
    )
    sizes = [len(event.value) for event in itertools.islice(generator, sample)]
    return round(sum(sizes) / len(sizes))


@contextmanager
def bench_topics(settings: Settings, names: list[str]) -> Iterator[list[str]]:
    """Fresh topics shaped like payments.transactions, deleted afterwards."""
    admin = admin_client(settings)
    spec = topic(PAYMENTS_TRANSACTIONS)
    # As declared: on three brokers, replication 3 and min.insync.replicas 2, so that
    # acks=all waits for the followers as it does on payments.transactions.
    rf = declared_replication(settings, spec, cluster_size(settings, admin))
    configs = {**declared_configs(spec, rf), "compression.type": "producer"}
    new = [NewTopic(name, spec.partitions, rf, config=configs) for name in names]
    for future in admin.create_topics(new, operation_timeout=30).values():
        future.result()
    try:
        yield names
    finally:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result()


# --- cores -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cores:
    producer: int
    broker: frozenset[int]
    broker_pids: tuple[int, ...]

    @property
    def broker_list(self) -> str:
        return ",".join(str(c) for c in sorted(self.broker))


def producer_cores(settings: Settings) -> Cores | None:
    """The last CPU for the producers, the others for the local broker; None (and why)
    when there is one CPU or the broker is not a process of this machine."""
    cpus = sorted(os.sched_getaffinity(0))
    ports = {
        int(port)
        for host, _, port in (a.rpartition(":") for a in settings.bootstrap_servers.split(","))
        if host in ("127.0.0.1", "localhost", "[::1]")
    }
    pids = tuple(listening_pids(ports))
    if len(cpus) < 2 or not pids:
        why = "one CPU" if len(cpus) < 2 else "no local process listens on the bootstrap ports"
        print(f"  not pinning ({why}): the figures share the CPUs with the broker")
        return None
    return Cores(producer=cpus[-1], broker=frozenset(cpus[:-1]), broker_pids=pids)


@contextmanager
def broker_kept_off(cores: Cores | None) -> Iterator[None]:
    """Every thread of the broker's processes on the broker's CPUs; put back afterwards."""
    before: dict[int, set[int]] = {}
    if cores:
        for pid in cores.broker_pids:
            for thread in psutil.Process(pid).threads():
                with suppress(OSError):  # a thread that ended meanwhile
                    before[thread.id] = os.sched_getaffinity(thread.id)
                    os.sched_setaffinity(thread.id, cores.broker)
    try:
        yield
    finally:
        for tid, cpus in before.items():
            with suppress(OSError):
                os.sched_setaffinity(tid, cpus)


@contextmanager
def on_cpu(cores: Cores | None) -> Iterator[None]:
    """This thread, and the threads and processes it starts meanwhile, on the producers' CPU."""
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cores.producer})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# --- the two producers --------------------------------------------------------------------


def shared_props() -> dict[str, str]:
    return {name: PRODUCER_DEFAULTS[name] for name in SHARED_PRODUCER_PROPS}


def java_command(
    settings: Settings, libs: Path, topic_name: str, events: int, record_size: int
) -> list[str]:
    props = {"bootstrap.servers": settings.bootstrap_servers, **shared_props()}
    java = shutil.which("java") or "java"
    return [
        java, "-Xmx1g", "-cp", f"{libs}/*", "org.apache.kafka.tools.ProducerPerformance",
        "--topic", topic_name,
        "--num-records", str(events),
        "--record-size", str(record_size),
        "--throughput", "-1",
        "--key-distribution", "random",
        "--record-key-range", str(settings.producer_cards),
        "--command-property", *(f"{k}={v}" for k, v in props.items()),
    ]  # fmt: skip


def run_java(
    settings: Settings,
    libs: Path,
    topic_name: str,
    events: int,
    record_size: int,
    cores: Cores | None = None,
) -> Figure:
    command = java_command(settings, libs, topic_name, events, record_size)
    children_cpu = _children_cpu_s()
    with on_cpu(cores):
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    cpu_us = (_children_cpu_s() - children_cpu) / events * 1e6
    matches = _JAVA_SUMMARY.findall(done.stdout)
    if done.returncode != 0 or not matches:
        raise SystemExit(f"ProducerPerformance failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    sent, per_s, mb_per_s = matches[-1]
    return Figure(
        "Java ProducerPerformance", float(per_s), float(mb_per_s), cpu_us, f"{int(sent):,} sent"
    )


def run_python(
    settings: Settings, topic_name: str, events: int, record_size: int, cores: Cores | None = None
) -> Figure:
    cpu = time.process_time()
    with on_cpu(cores):  # librdkafka's threads start in here: they stay on that CPU too
        summary = produce_payments(
            settings, rate=0, count=events, duration=None, seed=1, topic=topic_name
        )
    if not summary.ok or summary.sent != events:
        raise SystemExit(f"the Python producer did not deliver everything: {summary.line()}")
    # Values only, as the Java tool counts.
    mb_per_s = summary.events_per_s * record_size / 1_048_576
    cpu_us = (time.process_time() - cpu) / events * 1e6
    return Figure(
        "Python produce_payments (generation included)", summary.events_per_s, mb_per_s, cpu_us
    )


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- results --------------------------------------------------------------------------------


def append_results(
    settings: Settings,
    args: argparse.Namespace,
    record_size: int,
    java: Figure,
    ours: Figure,
    ratio: float,
    libs: Path,
    cores: Cores | None,
) -> None:
    props = " ".join(f"{k}={v}" for k, v in shared_props().items())
    command = (
        f"RIVERBED_KAFKA_BOOTSTRAP={settings.bootstrap_servers} .venv/bin/python -m "
        f"bench.producer_bench --events {args.events} --rounds {args.rounds} --kafka-libs {libs}"
        + ("" if args.pin else " --no-pin")
    )
    placement = (
        f"each producer alone on CPU {cores.producer}, the broker's processes on CPUs "
        f"{cores.broker_list} (both producers get the same one core)"
        if cores
        else "not pinned: the producers share the CPUs with the broker"
    )
    section = f"""
## Producer: Python with generation vs Kafka's ProducerPerformance ({_now()})

- machine: {os.cpu_count()} CPUs (nproc), {platform.system()} {platform.machine()}, \
Python {platform.python_version()}, confluent-kafka {confluent_kafka.__version__} \
(librdkafka {confluent_kafka.libversion()[0]}); broker and both producers on the same host
- {args.events:,} events per run, best of {args.rounds}; records of {record_size} bytes \
(the mean of our encoded transactions), keys over {settings.producer_cards:,} cards; \
a fresh topic of {topic(PAYMENTS_TRANSACTIONS).partitions} partitions per run
- producer settings on both sides: {props}
- CPUs: {placement}

| producer | events/s | MB/s | CPU µs per event |
|---|---:|---:|---:|
| {java.name} | {java.events_per_s:,.0f} | {java.mb_per_s:.1f} | {java.cpu_us_per_event:.1f} |
| {ours.name} | {ours.events_per_s:,.0f} | {ours.mb_per_s:.1f} | {ours.cpu_us_per_event:.1f} |

Ratio Python / Java: **{ratio:.2f}** (goal >= 0.8).

Reproduce: `{command}`
"""
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n", encoding="utf-8")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(section)
    print(f"appended to {RESULTS}")


def _line(figure: Figure) -> str:
    return (
        f"{figure.name}: {figure.events_per_s:,.0f} events/s, "
        f"{figure.cpu_us_per_event:.1f} CPU µs per event"
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


if __name__ == "__main__":
    sys.exit(main())
