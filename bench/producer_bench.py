"""Benchmark the payments producer (generation included) against Kafka's own Java producer.

    python -m bench.producer_bench [--events 2000000] [--rounds 1] [--kafka-libs DIR]

Both run on the same broker (``RIVERBED_KAFKA_BOOTSTRAP``, or the settings' local
broker), each into a fresh topic of its own with the partitions of
``payments.transactions``, with the same producer settings (acks=all,
idempotence, linger.ms, batch.size, compression) and records of the same size
(the mean size of our encoded transactions), keyed over as many keys as there
are cards. The baseline is ``org.apache.kafka.tools.ProducerPerformance``
(kafka-producer-perf-test) sending pre-made random payloads; ours generates
every transaction it sends. The goal (issue 12): ours >= 0.8x the baseline's events/s.

Prints both figures and their ratio and appends a section to ``bench/RESULTS.md``.
The bench topics are deleted at the end.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

from producers.kafka_loop import PRODUCER_DEFAULTS
from producers.payments import GeneratorConfig, PaymentsGenerator, produce_payments
from riverbed.kafka_admin import cluster_size, declared_configs, declared_replication
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
    with bench_topics(settings, names):
        # Alternate the two, so neither always runs on a warmer broker.
        for java_topic, python_topic in zip(names[::2], names[1::2], strict=True):
            java_runs.append(run_java(settings, libs, java_topic, args.events, record_size))
            print(f"  {java_runs[-1].name}: {java_runs[-1].events_per_s:,.0f} events/s")
            python_runs.append(run_python(settings, python_topic, args.events, record_size))
            print(f"  {python_runs[-1].name}: {python_runs[-1].events_per_s:,.0f} events/s")
    java = max(java_runs, key=lambda f: f.events_per_s)
    ours = max(python_runs, key=lambda f: f.events_per_s)
    ratio = ours.events_per_s / java.events_per_s
    print(f"ratio Python / Java: {ratio:.2f} (goal >= 0.8)")
    if not args.no_results:
        append_results(settings, args, record_size, java, ours, ratio, libs)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.producer_bench", description=__doc__)
    # Fewer than ~2M and the figures mostly measure start-up: the JVM's JIT and
    # the connections and producer id both producers set up before the first batch.
    parser.add_argument("--events", type=int, default=2_000_000, help="events per producer run")
    parser.add_argument("--rounds", type=int, default=1, help="runs per side; the best counts")
    parser.add_argument("--kafka-libs", type=Path, help="Kafka's libs/ (default: the local one)")
    parser.add_argument("--no-results", action="store_true", help="don't append to RESULTS.md")
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
    admin = AdminClient(settings.kafka_client_config())
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
    settings: Settings, libs: Path, topic_name: str, events: int, record_size: int
) -> Figure:
    command = java_command(settings, libs, topic_name, events, record_size)
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    matches = _JAVA_SUMMARY.findall(done.stdout)
    if done.returncode != 0 or not matches:
        raise SystemExit(f"ProducerPerformance failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    sent, per_s, mb_per_s = matches[-1]
    return Figure("Java ProducerPerformance", float(per_s), float(mb_per_s), f"{int(sent):,} sent")


def run_python(settings: Settings, topic_name: str, events: int, record_size: int) -> Figure:
    summary = produce_payments(
        settings, rate=0, count=events, duration=None, seed=1, topic=topic_name
    )
    if not summary.ok or summary.sent != events:
        raise SystemExit(f"the Python producer did not deliver everything: {summary.line()}")
    # Values only, as the Java tool counts.
    mb_per_s = summary.events_per_s * record_size / 1_048_576
    return Figure("Python produce_payments (generation included)", summary.events_per_s, mb_per_s)


# --- results --------------------------------------------------------------------------------


def append_results(
    settings: Settings,
    args: argparse.Namespace,
    record_size: int,
    java: Figure,
    ours: Figure,
    ratio: float,
    libs: Path,
) -> None:
    props = " ".join(f"{k}={v}" for k, v in shared_props().items())
    command = (
        f"RIVERBED_KAFKA_BOOTSTRAP={settings.bootstrap_servers} .venv/bin/python -m "
        f"bench.producer_bench --events {args.events} --rounds {args.rounds} --kafka-libs {libs}"
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

| producer | events/s | MB/s |
|---|---:|---:|
| {java.name} | {java.events_per_s:,.0f} | {java.mb_per_s:.1f} |
| {ours.name} | {ours.events_per_s:,.0f} | {ours.mb_per_s:.1f} |

Ratio Python / Java: **{ratio:.2f}** (goal >= 0.8).

Reproduce: `{command}`
"""
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n", encoding="utf-8")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(section)
    print(f"appended to {RESULTS}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


if __name__ == "__main__":
    sys.exit(main())
