"""The generator's lateness, measured the way the flow judges it (issue 12).

A benchmark or test that preloads the generator's output expects the flow to mark
about ``late_share`` of the valid events late, and no more. Here the flow's rule is
recomputed in plain Python over a large seeded sample, independently of the
generator's ``late`` labels: events are put on the partitions the producer's
partitioner (murmur2, as the Java client) picks for their key, and an event is late
when its event time is older than the newest event time seen so far in its
partition minus the allowed lateness (``flows/payments/windows.py``).
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, replace

import pytest

from flows.payments.config import FlowConfig
from producers.payments import GeneratedEvent, GeneratorConfig, PaymentsGenerator
from riverbed.settings import load_settings
from riverbed.topics import PAYMENTS_TRANSACTIONS, topic

START = 1_795_953_600.0  # 2026-11-29 12:00 UTC: noon, as the benchmark's preload
RATE = 200.0  # events/s of event time, the benchmark's and `make run`'s
PARTITIONS = topic(PAYMENTS_TRANSACTIONS).partitions
LATENESS_S = FlowConfig().allowed_lateness_us / 1e6
# A late event arrives at most this long after its event time: only events older than
# the stream's end by this much have had the chance to arrive late.
LATE_ARRIVAL_MAX_S = 600.0


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), unsigned 32-bit."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    whole = len(data) // 4 * 4
    for i in range(0, whole, 4):
        k = (int.from_bytes(data[i : i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> r)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h = ((h ^ tail[0]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def partition_of(key: bytes, partitions: int = PARTITIONS) -> int:
    """The partition librdkafka's ``murmur2_random`` (the producer's setting) picks."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize(
    ("key", "expected"),
    # kafka-python's Java-compatibility vectors, over 1000 partitions.
    [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)],
)
def test_the_partitioner_is_the_java_clients(key: bytes, expected: int) -> None:
    assert partition_of(key, 1000) == expected


@dataclass
class Lateness:
    """The flow's verdicts over a stream, per partition."""

    valid: list[int]  # per partition: valid first copies old enough to have been judged
    late: list[int]  # of those, late by the watermark rule
    behind_s: list[float]  # every late event: how far behind its partition's newest
    unlabelled_late: int  # late by the rule but not labelled late by the generator


def judge(events: list[GeneratedEvent], lateness_s: float = LATENESS_S) -> Lateness:
    """The watermark rule over ``events`` in emission order (resends dropped, as the flow)."""
    horizon = max(e.event_time for e in events) - LATE_ARRIVAL_MAX_S
    newest: list[float | None] = [None] * PARTITIONS
    valid, late = [0] * PARTITIONS, [0] * PARTITIONS
    behind: list[float] = []
    unlabelled = 0
    partitions: dict[bytes, int] = {}
    seen: set[str] = set()
    for event in events:
        if not event.valid or event.transaction_id in seen:
            continue
        seen.add(event.transaction_id)
        p = partitions.get(event.key)
        if p is None:
            p = partitions[event.key] = partition_of(event.key)
        top = newest[p]
        is_late = False
        if top is not None and event.event_time < top - lateness_s:
            is_late = True
            behind.append(top - event.event_time)
            unlabelled += not event.late
        if event.event_time <= horizon:
            valid[p] += 1
            late[p] += is_late
        if top is None or event.event_time > top:
            newest[p] = event.event_time
    return Lateness(valid, late, behind, unlabelled)


def sample(config: GeneratorConfig, n: int, seed: int) -> list[GeneratedEvent]:
    generator = PaymentsGenerator(config, seed=seed, start=START, rate=RATE)
    return list(itertools.islice(generator, n))


@pytest.mark.parametrize(
    ("late_share", "n"),
    # None: the benchmark's preload, the settings' population and shares.
    [(None, 300_000), (0.05, 180_000)],
    ids=["settings", "late-share-5pct"],
)
def test_the_flow_marks_late_about_the_configured_share(late_share: float | None, n: int) -> None:
    # Built here, not at collection: the settings are read once the environment is cleared.
    config = GeneratorConfig.from_settings(load_settings())
    if late_share is not None:
        config = replace(config, late_share=late_share)
    verdicts = judge(sample(config, n, seed=7))
    # The last 10 minutes are not judged (their late events are still to come): per
    # partition ~30,000 (settings) or ~10,000 (5%) judged events, so 300-500 late ones;
    # 30% is over five standard deviations of the count.
    for p in range(PARTITIONS):
        share = verdicts.late[p] / verdicts.valid[p]
        assert share == pytest.approx(config.late_share, rel=0.3), f"partition {p}: {share:.4f}"
    # Only the deferred events are out of order, by 2-10 minutes behind the clock (a
    # little less behind their partition's newest event; the allowed lateness never
    # covers them); nothing else is behind by more than the allowed lateness.
    assert verdicts.unlabelled_late == 0
    assert min(verdicts.behind_s) >= 100.0
    assert max(verdicts.behind_s) <= LATE_ARRIVAL_MAX_S
    assert 240.0 <= statistics.median(verdicts.behind_s) <= 480.0


def test_without_late_events_nothing_is_late() -> None:
    verdicts = judge(sample(GeneratorConfig(late_share=0.0), 60_000, seed=3))
    assert sum(verdicts.late) == 0 and not verdicts.behind_s
