"""The peer benchmark's oracle: which events each lateness semantics keeps, and the windows."""

from __future__ import annotations

from bench.peers.oracle import (
    InputEvent,
    Rule,
    Scope,
    Semantics,
    compare_windows,
    first_seen,
    oracle_windows,
)

T0 = 1_800_000_000_000 - 1_800_000_000_000 % 60_000  # a window start, in ms


def ev(
    partition: int, second: float, merchant: str = "m1", cents: int = 100, tid: str = ""
) -> InputEvent:
    ms = T0 + round(second * 1000)
    return InputEvent(partition, 0, tid or f"t{partition}-{ms}", merchant, ms, cents)


RIVERBED = Semantics("per-partition", "", 30_000, Scope.PARTITION, Rule.EVENT)
GLOBAL_WINDOW = Semantics("global", "", 30_000, Scope.GLOBAL, Rule.WINDOW)


def test_event_rule_judges_the_event_and_window_rule_judges_its_window() -> None:
    # Newest at 95 s: the event at 50 s is 45 s old (late by the event), but its window
    # [0, 60) ends at 60 s and 60 + 30 = 90 <= 95: late by the window too. The event at
    # 64 s is 31 s old: late by the event, but its window [60, 120) is still open.
    events = [ev(0, 95), ev(0, 50), ev(0, 64)]
    by_event = oracle_windows(events, RIVERBED)
    by_window = oracle_windows(events, GLOBAL_WINDOW)
    assert by_event.late == 2
    assert by_window.late == 1
    assert by_window.windows == {("m1", T0 + 60_000): (2, 200)}


def test_per_partition_watermark_ignores_the_other_partitions() -> None:
    # Partition 1 read far ahead must not make partition 0's on-time events late.
    events = [ev(1, 300), ev(0, 10), ev(0, 20, cents=250)]
    per_partition = oracle_windows(events, RIVERBED)
    global_ = oracle_windows(events, Semantics("global", "", 30_000, Scope.GLOBAL, Rule.EVENT))
    assert per_partition.late == 0
    assert per_partition.windows[("m1", T0)] == (2, 350)
    assert global_.late == 2


def test_without_lateness_every_event_counts() -> None:
    events = [ev(0, 900), ev(1, 1), ev(2, 2, merchant="m2")]
    result = oracle_windows(events, Semantics("all", "", None))
    assert result.late == 0
    assert result.windows == {
        ("m1", T0 + 900_000): (1, 100),
        ("m1", T0): (1, 100),
        ("m2", T0): (1, 100),
    }


def test_closed_only_keeps_windows_their_key_has_passed() -> None:
    # m1 reaches 95 s: [0, 60) closed (60 + 30 <= 95), [60, 120) open; m2 never moves on.
    events = [ev(0, 10), ev(0, 95), ev(0, 12, merchant="m2")]
    quix = Semantics("per-key", "", 30_000, Scope.MERCHANT, Rule.WINDOW, closed_only=True)
    assert oracle_windows(events, quix).windows == {("m1", T0): (1, 100)}


def test_compare_counts_missing_and_extra_windows_as_unequal() -> None:
    expected = {("m1", T0): (2, 300), ("m2", T0): (1, 50)}
    got = {("m1", T0): (2, 300), ("m2", T0): (1, 49), ("m3", T0): (1, 10)}
    match = compare_windows(expected, got)
    assert (match.equal, match.total, match.counted) == (1, 3, 4)
    assert not match.all_equal


def test_first_seen_drops_resends() -> None:
    a, b = ev(0, 1, tid="x"), ev(0, 2, tid="y")
    resend = ev(0, 3, tid="x")
    assert first_seen([a, b, resend]) == [a, b]


def test_in_batches_the_newest_time_moves_only_between_batches() -> None:
    # Pathway judges a minibatch against the time before it: the event at 10 s, in the
    # batch that also brings 300 s, is on time; the one at 20 s, a batch later, is late.
    events = [ev(0, 300), ev(1, 10), ev(2, 20)]
    by_event = oracle_windows(events, GLOBAL_WINDOW)
    by_batch = oracle_windows(events, GLOBAL_WINDOW, batches=[1, 1, 2])
    assert by_event.late == 2
    assert by_batch.late == 1
    assert by_batch.windows[("m1", T0)] == (1, 100)
