"""bench.flow_bench's measures: the machine's speed, how busy it was, where a flow
process's CPU went, how far the flow's lake got, and where its report says them."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psutil

from bench.flow_bench import (
    SOURCE,
    Drain,
    busiest_thread_cpu,
    lake_progress,
    processor_us_per_event,
    report_throughput,
)
from riverbed import lake
from riverbed.settings import load_settings


def test_the_processor_speed_is_a_time_per_event_and_the_report_carries_it() -> None:
    settings = load_settings()
    # Few events, one pass: a per-event time in the range the flow runs at (6-8 µs on
    # the 2-core machine of bench/RESULTS.md), not a total or a rate.
    us = processor_us_per_event(settings, events=12_000, passes=1)
    assert 0.5 < us < 200
    drains = [
        Drain("flow (1 process, recovery on)", 10.0, 1_000_000, 10.0, 1.0),
        Drain("baseline (confluent-kafka Consumer + pyarrow)", 8.0, 1_000_000, 2.0, 0.5),
    ]
    text = report_throughput(settings, drains, 1_000_000, [1], us)
    assert f"the payments processor alone took {us:.2f} µs an event" in text
    assert "processor alone" not in report_throughput(settings, drains, 1_000_000, [1])


def test_the_busiest_thread_is_the_one_that_burned_the_cpu() -> None:
    # A thread of this process spins for ~0.3 s of CPU while the main thread sleeps:
    # the busiest thread's CPU is that thread's, not the process's total.
    def spin(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    worker = threading.Thread(target=spin, args=(0.3,))
    worker.start()
    worker.join()
    me = psutil.Process()
    busiest = busiest_thread_cpu(me)
    total = me.cpu_times().user + me.cpu_times().system
    assert 0.25 <= busiest <= total


def test_the_report_says_how_busy_the_machine_was() -> None:
    settings = load_settings()
    cores = os.cpu_count() or 1
    flow = Drain("flow (2 processes, recovery on)", 10.0, 1_000_000, 16.0, 1.0, 13.0, 0.5)
    one = Drain("flow (1 process, recovery on)", 14.0, 1_000_000, 15.0, 1.5, 12.5, 0.5)
    baseline = Drain("baseline (confluent-kafka Consumer + pyarrow)", 11.0, 1_000_000, 3.0, 1.0)
    text = report_throughput(settings, [one, flow, baseline], 1_000_000, [1, 2])
    row = next(line for line in text.splitlines() if line.startswith("| flow (2"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5] == "13.0 (1.30)"  # busiest threads
    assert cells[7] == "0.5 (0.05)"  # the benchmark's own CPU
    assert cells[8] == f"{(16.0 + 1.0 + 0.5) / (10.0 * cores):.2f}"


def test_lake_progress_follows_the_commits_two_between_reads_included(
    tmp_path: Path,
) -> None:
    read = lake_progress(tmp_path, [0, 1])
    assert read() == {}  # no table yet
    writer = lake.TableWriter(tmp_path, "transactions")
    apps = {p: lake.app_id(SOURCE, p) for p in (0, 1)}
    writer.claim(apps.values())
    no_rows = lake.TRANSACTIONS_SCHEMA.empty_table()
    writer.append(no_rows, {apps[0]: 40})
    assert read() == {0: 40}
    assert read() == {0: 40}  # nothing new: the same answer
    writer.append(no_rows, {apps[0]: 90, apps[1]: 7})
    writer.append(no_rows, {apps[1]: 12})  # two commits between reads: both seen
    assert read() == {0: 90, 1: 12}
