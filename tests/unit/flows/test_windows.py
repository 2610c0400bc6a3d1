"""Event-time windows: per-partition watermarks and lateness, and the merger."""

from __future__ import annotations

import copy
import pickle

from flows.payments.config import FlowConfig
from flows.payments.records import MergerInput, WindowDelta
from flows.payments.windows import PartitionWindows, WindowMerger

S = 1_000_000
M = 60 * S
T0 = 30_000_000 * M  # a minute boundary
CONFIG = FlowConfig(allowed_lateness_us=30 * S, window_us=M)


def feed(windows: PartitionWindows, events: list[tuple[int, str, str, int]]) -> list[bool]:
    """(seconds after T0, merchant, card, cents) -> which were late."""
    late = []
    for sec, merchant, card, cents in events:
        t = T0 + sec * S
        is_late = windows.is_late(t)
        late.append(is_late)
        if not is_late:
            windows.add(t, merchant, card, cents, 0)
        windows.observe(t)
    return late


def test_lateness_is_judged_against_the_partition_watermark() -> None:
    w = PartitionWindows(CONFIG)
    late = feed(w, [(10, "m", "a", 100), (100, "m", "a", 100), (75, "m", "b", 100)])
    assert late == [False, False, False], "75 s is within 30 s of the latest (100 s)"
    assert feed(w, [(69, "m", "c", 100)]) == [True]
    assert w.watermark_us == T0 + 70 * S


def test_a_window_is_reported_once_the_watermark_passes_its_end() -> None:
    w = PartitionWindows(CONFIG)
    feed(w, [(5, "m1", "a", 100), (20, "m1", "b", 300), (30, "m2", "a", 50)])
    feed(w, [(80, "m1", "a", 100)])
    assert w.close_ready() == [], "watermark 50 s: the first minute may still get events"
    feed(w, [(95, "m1", "c", 700)])
    deltas = w.close_ready()
    assert deltas == [
        WindowDelta("m1", T0, 2, 400, 100, 300, 2, 0),
        WindowDelta("m2", T0, 1, 50, 50, 50, 1, 0),
    ]
    assert w.close_ready() == []
    assert sorted(w.open) == [(T0 + M, "m1")]


def test_an_idle_flush_reports_open_windows_and_later_only_the_difference() -> None:
    w = PartitionWindows(CONFIG)
    feed(w, [(5, "m", "a", 100), (6, "m", "b", 200)])
    assert w.flush_open() == [WindowDelta("m", T0, 2, 300, 100, 200, 2, 0)]
    assert w.flush_open() == [], "nothing new"
    feed(w, [(7, "m", "a", 50), (200, "x", "z", 1)])
    assert w.close_ready()[0] == WindowDelta("m", T0, 1, 50, 50, 200, 0, 0)


def merger(partitions: int = 2) -> WindowMerger:
    return WindowMerger.for_partitions(list(range(partitions)), CONFIG)


def delta(merchant: str, minute: int, count: int, cents: int, cards: int) -> WindowDelta:
    return WindowDelta(merchant, T0 + minute * M, count, cents, cents, cents, cards, 0)


def test_the_merger_waits_for_every_busy_partition() -> None:
    m = merger()
    assert m.on_input(MergerInput(0, [delta("m", 0, 1, 100, 1)], T0 + 2 * M, False)) == []
    rows = m.on_input(MergerInput(1, [delta("m", 0, 2, 300, 2)], T0 + M, False))
    assert [(r.merchant_id, r.txn_count, r.sum_cents, r.distinct_cards) for r in rows] == [
        ("m", 3, 400, 3)
    ]
    assert rows[0].window_end_us == T0 + M


def test_idle_partitions_do_not_hold_windows_open() -> None:
    m = merger()
    m.on_input(MergerInput(0, [delta("m", 0, 1, 100, 1)], T0 + 10 * S, False))
    assert m.on_input(MergerInput(1, [], None, True)) == []
    # Partition 0 goes idle at the end of its input: everything closes.
    assert not m.all_idle()
    rows = m.on_input(MergerInput(0, [delta("m", 1, 1, 100, 1)], T0 + 80 * S, True))
    assert [(r.window_start_us, r.txn_count) for r in rows] == [(T0, 1), (T0 + M, 1)]
    assert m.all_idle(), "what it emitted closes the last windows: the sink writes it at once"


def test_late_news_from_an_idle_partition_corrects_a_closed_window() -> None:
    m = merger()
    m.on_input(MergerInput(1, [], None, True))
    (row,) = m.on_input(MergerInput(0, [delta("m", 0, 1, 100, 1)], T0 + 2 * M, False))
    assert row.txn_count == 1
    (fixed,) = m.on_input(MergerInput(1, [delta("m", 0, 2, 50, 2)], T0 + 40 * S, False))
    # The whole window again, recomputed: the lake upserts it in place.
    assert fixed.key == row.key
    assert (fixed.txn_count, fixed.sum_cents, fixed.min_cents) == (3, 150, 50)


def test_closed_windows_are_forgotten_once_no_partition_can_change_them() -> None:
    m = merger()
    m.on_input(MergerInput(0, [delta("m", 0, 1, 100, 1)], T0 + 2 * M, False))
    m.on_input(MergerInput(1, [], T0 + 2 * M, False))
    assert m.closed == {} and m.open == {}
    m.on_input(MergerInput(1, [delta("m", 0, 1, 1, 1)], T0 + 2 * M, False))
    assert m.dropped_deltas == 1


def test_the_merger_survives_pickling() -> None:
    m = merger()
    m.on_input(MergerInput(0, [delta("m", 0, 1, 100, 1)], T0 + 2 * M, False))
    copy = pickle.loads(pickle.dumps(m))
    rows = copy.on_input(MergerInput(1, [delta("m", 0, 1, 100, 1)], T0 + 2 * M, False))
    assert [r.txn_count for r in rows] == [2]


def test_a_merger_snapshot_from_before_windows_were_held_by_start_restores() -> None:
    """Snapshots keyed the merger's windows by (start, merchant); a restart restores them."""
    m = merger()
    m.on_input(MergerInput(0, [delta("a", 0, 1, 100, 1), delta("b", 1, 2, 50, 1)], None, False))
    old = copy.copy(m.__dict__)
    old["open"] = {(s, k): agg for s, held in m.open.items() for k, agg in held.items()}
    restored = WindowMerger.__new__(WindowMerger)
    restored.__setstate__(old)
    assert restored.open == m.open and restored.window_count() == 2
    rows = restored.on_input(MergerInput(1, [], T0 + 3 * M, False))
    assert rows == [], "partition 0 holds them back"
    rows = restored.on_input(MergerInput(0, [], T0 + 3 * M, False))
    assert [(r.merchant_id, r.txn_count) for r in rows] == [("a", 1), ("b", 2)]
