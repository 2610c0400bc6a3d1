"""What a local cluster of three Kafka nodes costs over one, on this machine.

    python -m bench.cluster_cost [--idle-seconds 60] [--no-results]

For each size (one node, then three; the baseline is the one-node cluster, in the
same run) on a fresh home and free ports: the first start (formats the storage),
the declared topics applied, a stop, then a start of the formatted cluster, the
nodes' CPU while idle over ``--idle-seconds``, their resident memory, and a stop.
Appends the figures and this command to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

from riverbed.broker import LocalCluster, free_port_range
from riverbed.kafka_admin import apply_topics
from riverbed.kafka_jars import KafkaJars
from riverbed.settings import load_settings

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass
class Cost:
    nodes: int
    first_start_s: float
    start_s: float
    stop_s: float
    idle_cpu_share: float  # of one core
    rss_mb: float


def measure(nodes: int, dist: Path, work: Path, idle_s: float) -> Cost:
    settings = load_settings(
        home=work / f"nodes-{nodes}",
        kafka_brokers=nodes,
        kafka_port=free_port_range(3 * nodes),
        kafka_dist=dist,
    )
    cluster = LocalCluster(settings)
    began = time.monotonic()
    cluster.start()
    first = time.monotonic() - began
    try:
        apply_topics(settings)
        cluster.stop()
        began = time.monotonic()
        status = cluster.start()
        start = time.monotonic() - began
        processes = [psutil.Process(pid) for pid in status.pids.values()]
        time.sleep(10)  # let start-up work settle

        def cpu() -> float:
            return sum(p.cpu_times().user + p.cpu_times().system for p in processes)

        before = cpu()
        time.sleep(idle_s)
        share = (cpu() - before) / idle_s
        rss = sum(p.memory_info().rss for p in processes) / 2**20
    finally:
        began = time.monotonic()
        cluster.stop()
        stop = time.monotonic() - began
    return Cost(nodes, first, start, stop, share, rss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_cost", description=__doc__)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--no-results", action="store_true", help="don't append to RESULTS.md")
    args = parser.parse_args(argv)
    dist = KafkaJars(load_settings()).fetch().parent
    with tempfile.TemporaryDirectory(prefix="riverbed-cluster-cost-") as tmp:
        costs = [measure(n, dist, Path(tmp), args.idle_seconds) for n in (1, 3)]
    rows = [
        ("start (formatted)", "start_s", "{:.1f} s"),
        ("first start (formats storage)", "first_start_s", "{:.1f} s"),
        ("stop (controlled shutdown)", "stop_s", "{:.1f} s"),
        ("idle CPU, share of one core", "idle_cpu_share", "{:.1%}"),
        ("resident memory", "rss_mb", "{:,.0f} MB"),
    ]
    table = ["| | 1 node | 3 nodes |", "|---|---:|---:|"]
    for label, field, fmt in rows:
        one, three = (fmt.format(getattr(c, field)) for c in costs)
        table.append(f"| {label} | {one} | {three} |")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"""
## Local cluster: three nodes vs one ({when})

- machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, \
{platform.system()} {platform.machine()}; each node's heap {load_settings().kafka_heap}
- each size on a fresh home: first start, topics applied, stop, start, then
  {args.idle_seconds:.0f} s idle (CPU of the nodes' JVMs), stop

{chr(10).join(table)}

Reproduce: `.venv/bin/python -m bench.cluster_cost --idle-seconds {args.idle_seconds:.0f}`
"""
    print(section)
    if not args.no_results:
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write(section)
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
