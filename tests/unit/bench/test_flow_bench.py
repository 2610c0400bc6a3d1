"""bench.flow_bench's measure of the machine's speed, and where its report says it."""

from __future__ import annotations

from bench.flow_bench import Drain, processor_us_per_event, report_throughput
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
