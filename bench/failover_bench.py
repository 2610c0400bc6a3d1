"""Failover: the broker leading the most partitions killed (kill -9) under load.

    python -m bench.failover_bench [--rate 5000] [--rounds 3] [--no-results]

A local three-node cluster on a fresh home and free ports, the payments topics
(``bench.``-prefixed, replication 3, ``min.insync.replicas`` 2), the flow
deployed, and generated payments at a steady ``--rate`` with the project's
producer settings (idempotent, ``acks=all``), every delivery timed. Each round
runs 15 s steady, kills the broker that leads the most partitions, runs 30 s more,
then starts it again and waits until every partition is back in sync.

Per round:

- **time until deliveries succeed again**: for each partition, from the kill to the
  first acknowledgement of a message sent after it; the round's figure is the
  slowest partition (writes everywhere work again). p50 and p99 over the
  partitions of every round are reported too;
- **acknowledgement latency** p50/p99 of the messages sent in the 30 s after the
  kill, against the baseline: the same, in the 15 s before it, in the same run;
- **alert latency** p99 (produce -> alert readable on the alerts topic) for the
  transactions sent in the 30 s after the kill, against the 15 s before it.

Appends the figures and this command to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import KafkaError, Message, Producer

from bench.flow_bench import (
    ALERTS,
    DLQ,
    PROFILES,
    SOURCE,
    append_results,
    bench_settings,
    machine,
    percentile,
    recreate_topics,
    start_flow,
    stop,
    watch_alerts,
)
from producers.kafka_loop import PRODUCER_DEFAULTS, produce_when_room
from producers.payments import GeneratorConfig, PaymentsGenerator
from riverbed.broker import LocalCluster, free_port_range
from riverbed.kafka_health import busiest_leader, wait_in_sync
from riverbed.kafka_jars import KafkaJars
from riverbed.settings import Settings, load_settings

STEADY_S = 15.0
AFTER_S = 30.0


@dataclass
class Sent:
    txn: str
    partition: int = -1
    sent_at: float = 0.0  # wall clock
    acked_at: float | None = None
    error: str | None = None


@dataclass
class TimedProducer:
    """Generated payments at a steady rate; the send and acknowledgement time of each."""

    settings: Settings
    rate: float
    sent: list[Sent] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        config = GeneratorConfig(cards=max(5000, int(self.rate * 25)))
        events = iter(
            PaymentsGenerator(
                config, seed=5, start=time.time(), rate=self.rate, wall_clock=time.time
            )
        )
        producer = Producer(
            {**self.settings.kafka_client_config(), **PRODUCER_DEFAULTS, "linger.ms": 1}
        )
        began = time.monotonic()
        n = 0
        while not self.stop.is_set():
            due = int((time.monotonic() - began) * self.rate)
            while n < due:
                event = next(events)
                record = Sent(event.transaction_id, sent_at=time.time())

                def report(err: KafkaError | None, msg: Message, record: Sent = record) -> None:
                    record.partition = msg.partition()
                    record.acked_at = time.time()
                    record.error = err.name() if err is not None else None

                produce_when_room(producer, SOURCE, event.value, event.key, on_delivery=report)
                self.sent.append(record)
                n += 1
            producer.poll(0)
            time.sleep(0.005)
        producer.flush(120)


@dataclass
class Round:
    victim: int
    recovered_s: float  # the slowest partition
    per_partition_s: list[float]
    ack_before_ms: list[float]
    ack_after_ms: list[float]
    alert_before_ms: list[float]
    alert_after_ms: list[float]
    failed: int


def one_round(cluster: LocalCluster, settings: Settings, flow_settings: Settings,
              rate: float, log: Path) -> Round:  # fmt: skip
    producer = TimedProducer(settings, rate)
    alerts: dict[str, float] = {}
    watching = threading.Event()
    threads = [
        threading.Thread(target=producer.run, daemon=True),
        threading.Thread(target=watch_alerts, args=(settings, ALERTS, watching, alerts)),
    ]
    procs = start_flow(flow_settings, 1, log)
    try:
        time.sleep(4)  # the flow is up before the clock starts
        for thread in threads:
            thread.start()
        time.sleep(STEADY_S)
        victim = busiest_leader(settings)
        killed_at = time.time()
        os.kill(cluster.status().pids[victim], signal.SIGKILL)
        time.sleep(AFTER_S)
        producer.stop.set()
        threads[0].join(150)
        time.sleep(3)
    finally:
        watching.set()
        threads[1].join(10)
        stop(procs)
    cluster.start()
    wait_in_sync(cluster.settings, 300)

    first: dict[int, float] = {}
    for record in sorted(producer.sent, key=lambda r: r.acked_at or float("inf")):
        if record.sent_at >= killed_at and record.acked_at and record.error is None:
            first.setdefault(record.partition, record.acked_at - killed_at)

    def acks(lo: float, hi: float) -> list[float]:
        return [
            (r.acked_at - r.sent_at) * 1000
            for r in producer.sent
            if lo <= r.sent_at < hi and r.acked_at and r.error is None
        ]

    sent_at = {r.txn: r.sent_at for r in producer.sent}

    def alert_ms(lo: float, hi: float) -> list[float]:
        return [(t - sent_at[x]) * 1000 for x, t in alerts.items() if lo <= sent_at.get(x, 0) < hi]

    return Round(
        victim=victim,
        recovered_s=max(first.values()),
        per_partition_s=sorted(first.values()),
        ack_before_ms=acks(killed_at - STEADY_S, killed_at),
        ack_after_ms=acks(killed_at, killed_at + AFTER_S),
        alert_before_ms=alert_ms(killed_at - STEADY_S + 2, killed_at),
        alert_after_ms=alert_ms(killed_at, killed_at + AFTER_S),
        failed=sum(1 for r in producer.sent if r.error is not None),
    )


def report(rounds: list[Round], rate: float, heap: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

    def p(values: list[float], q: float) -> str:
        return f"{percentile(values, q):.0f}"

    rows = []
    for i, r in enumerate(rounds, 1):
        cells = [
            str(i),
            str(r.victim),
            f"{r.recovered_s:.1f}",
            f"{p(r.ack_before_ms, 0.5)} / {p(r.ack_before_ms, 0.99)}",
            f"{p(r.ack_after_ms, 0.5)} / {p(r.ack_after_ms, 0.99)}",
            p(r.alert_before_ms, 0.99),
            p(r.alert_after_ms, 0.99),
            str(r.failed),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    header = (
        "| round | killed | deliveries everywhere again (s) | ack p50 / p99 before (ms) "
        "| ack p50 / p99 after (ms) | alert p99 before (ms) | alert p99 after (ms) "
        "| failed deliveries |"
    )
    partitions = [s for r in rounds for s in r.per_partition_s]
    return f"""
## Failover: the busiest leader killed under {rate:,.0f} events/s ({when})

- machine: {machine()}; three local nodes (heap {heap} each), topics with replication 3
  and min.insync.replicas 2, producer idempotent with acks=all, the flow deployed
- each round: {STEADY_S:.0f} s steady (the baseline), kill -9 of the broker leading the most
  partitions, {AFTER_S:.0f} s more, then the broker started again and every partition
  back in sync

{header}
|---|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Time until deliveries succeed again, per partition over every round: p50
{percentile(partitions, 0.5):.1f} s, p99 {percentile(partitions, 0.99):.1f} s.

Reproduce: `python -m bench.failover_bench --rate {rate:g} --rounds {len(rounds)}`
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover_bench", description=__doc__)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-results", action="store_true", help="don't append to RESULTS.md")
    args = parser.parse_args(argv)
    base = load_settings()
    dist = KafkaJars(base).fetch().parent
    with tempfile.TemporaryDirectory(prefix="riverbed-failover-") as tmp:
        work = Path(tmp)
        settings = load_settings(
            home=work / "cluster", kafka_brokers=3, kafka_port=free_port_range(9), kafka_dist=dist
        )
        cluster = LocalCluster(settings)
        cluster.start()
        try:
            rounds = []
            for i in range(args.rounds):
                recreate_topics(settings, [SOURCE, ALERTS, DLQ, PROFILES])
                flow_settings = bench_settings(settings, work / f"flow-{i}", f"bench.failover.{i}")
                rounds.append(one_round(cluster, settings, flow_settings, args.rate,
                                        work / f"flow-{i}.log"))  # fmt: skip
                print(f"round {i + 1}: deliveries everywhere again after "
                      f"{rounds[-1].recovered_s:.1f} s", flush=True)  # fmt: skip
        finally:
            cluster.stop()
    text = report(rounds, args.rate, settings.kafka_heap)
    print(text)
    if not args.no_results:
        append_results(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
