"""Tumbling event-time windows per merchant, in two stages.

Stage 1, :class:`PartitionWindows` (one per Kafka partition, inside the
partition processor): the partition's watermark is the latest event time it
has seen minus the allowed lateness, updated after every event. An event
older than the watermark (judged before the event moves it) is *late*: it is
kept in the lake with ``late = true`` and counted, but joins no window. Since
the watermark depends only on the partition's own order of events, a replay of
a backlog judges every event as the live run did, however the batches fall.
Once the watermark reaches a window's end no on-time event can join it, and
the partition reports what it holds for the window as a :class:`WindowDelta`.

Stage 2, :class:`WindowMerger` (one for the whole flow): sums the partitions'
deltas per (merchant, window). A window is final when every partition that is
not idle has a watermark at or past the window's end (all partitions idle:
everything is final, so a finite input closes all its windows). Cards never
span partitions, so distinct cards add up across partitions.

Idle partitions. A partition that is caught up and quiet reports every window
it still holds (an *idle flush*) and stops holding the merged watermark back.
If it later gets on-time events for a window the merger already closed, the
merger emits the window again with the full, recomputed values, and the lake
upserts it in place (one row per merchant and window). The merger
keeps closed windows for that until every partition's watermark passed them,
or for ``correction_retention_us`` of event time at most; deltas for a window
already forgotten are counted in ``dropped_deltas`` and otherwise ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flows.payments.config import FlowConfig
from flows.payments.records import MerchantMinuteRow, MergerInput, WindowDelta

_NEVER = -(1 << 62)


class _Open:
    """One (merchant, window) inside a partition, and what was already reported."""

    __slots__ = ("alerts", "cards", "count", "max", "min", "rep", "sum")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0
        self.min = 1 << 62
        self.max = -(1 << 62)
        self.cards: set[str] = set()
        self.alerts = 0
        # (count, sum, distinct, alerts) already reported in deltas
        self.rep: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __getstate__(self) -> tuple:
        return (self.count, self.sum, self.min, self.max, self.cards, self.alerts, self.rep)

    def __setstate__(self, s: tuple) -> None:
        self.count, self.sum, self.min, self.max, self.cards, self.alerts, self.rep = s

    def delta(self, merchant_id: str, start_us: int) -> WindowDelta | None:
        count, total, distinct, alerts = self.rep
        if count == self.count and alerts == self.alerts:
            return None  # nothing new since the last report
        self.rep = (self.count, self.sum, len(self.cards), self.alerts)
        return WindowDelta(
            merchant_id,
            start_us,
            self.count - count,
            self.sum - total,
            self.min,
            self.max,
            len(self.cards) - distinct,
            self.alerts - alerts,
        )


class PartitionWindows:
    """Stage 1: one partition's watermark and its open (merchant, window) aggregates."""

    def __init__(self, config: FlowConfig) -> None:
        self.window_us = config.window_us
        self.lateness_us = config.allowed_lateness_us
        self.max_event_us: int | None = None
        self.watermark_us: int | None = None
        self.open: dict[tuple[int, str], _Open] = {}
        # Smallest window end among open windows: skips the scan when nothing closes.
        self._next_end = 1 << 62

    def is_late(self, event_us: int) -> bool:
        wm = self.watermark_us
        return wm is not None and event_us < wm

    def add(self, event_us: int, merchant_id: str, card_id: str, cents: int, alerts: int) -> None:
        """An on-time transaction joins its window."""
        start = event_us - event_us % self.window_us
        key = (start, merchant_id)
        agg = self.open.get(key)
        if agg is None:
            agg = self.open[key] = _Open()
            end = start + self.window_us
            if end < self._next_end:
                self._next_end = end
        agg.count += 1
        agg.sum += cents
        if cents < agg.min:
            agg.min = cents
        if cents > agg.max:
            agg.max = cents
        agg.cards.add(card_id)
        agg.alerts += alerts

    def observe(self, event_us: int) -> None:
        """Move the watermark (after the event was judged and added)."""
        if self.max_event_us is None or event_us > self.max_event_us:
            self.max_event_us = event_us
            self.watermark_us = event_us - self.lateness_us

    def close_ready(self) -> list[WindowDelta]:
        """Report and forget every window the watermark has passed."""
        wm = self.watermark_us
        if wm is None or wm < self._next_end:
            return []
        out = []
        keep: dict[tuple[int, str], _Open] = {}
        next_end = 1 << 62
        for key in sorted(self.open):
            agg = self.open[key]
            end = key[0] + self.window_us
            if end <= wm:
                delta = agg.delta(key[1], key[0])
                if delta is not None:
                    out.append(delta)
            else:
                keep[key] = agg
                next_end = min(next_end, end)
        self.open = keep
        self._next_end = next_end
        return out

    def flush_open(self) -> list[WindowDelta]:
        """Report what every open window holds so far, keeping them open (idle flush)."""
        out = []
        for key in sorted(self.open):
            delta = self.open[key].delta(key[1], key[0])
            if delta is not None:
                out.append(delta)
        return out


@dataclass(slots=True)
class _Agg:
    count: int = 0
    sum: int = 0
    min: int = 1 << 62
    max: int = -(1 << 62)
    distinct: int = 0
    alerts: int = 0
    emitted: int = 0  # times this window was written (1, then 1 per correction)

    def fold(self, d: WindowDelta) -> None:
        self.count += d.count
        self.sum += d.sum_cents
        if d.min_cents < self.min:
            self.min = d.min_cents
        if d.max_cents > self.max:
            self.max = d.max_cents
        self.distinct += d.distinct_cards
        self.alerts += d.alerts


@dataclass(slots=True)
class _Part:
    watermark_us: int | None = None
    idle: bool = False


Windows = dict[int, dict[str, _Agg]]  # window start (µs) -> merchant -> aggregate


@dataclass
class WindowMerger:
    """Stage 2: merges every partition's deltas into final merchant_minute rows.

    Windows are held by start, then merchant: closing and forgetting go through the
    few distinct starts (minutes), not every (merchant, minute), which a backlog
    read partition by partition makes tens of thousands.
    """

    partitions: tuple[int, ...]
    window_us: int
    retention_us: int
    parts: dict[int, _Part] = field(default_factory=dict)
    open: Windows = field(default_factory=dict)
    closed: Windows = field(default_factory=dict)
    forgotten_before_us: int = _NEVER  # windows ending at or before this are gone
    dropped_deltas: int = 0
    # Smallest end among open windows: most inputs close nothing and skip the scan.
    next_end_us: int = 1 << 62

    def __setstate__(self, state: dict) -> None:
        # A snapshot from before windows were held by start: keyed (start, merchant).
        for name in ("open", "closed"):
            held = state[name]
            if held and isinstance(next(iter(held)), tuple):
                by_start: Windows = {}
                for (start, merchant), agg in held.items():
                    by_start.setdefault(start, {})[merchant] = agg
                state[name] = by_start
        self.__dict__.update(state)

    @classmethod
    def for_partitions(cls, partitions: list[int], config: FlowConfig) -> WindowMerger:
        return cls(tuple(sorted(partitions)), config.window_us, config.correction_retention_us)

    def window_count(self) -> int:
        """Windows held, open and closed (kept for corrections)."""
        return sum(map(len, self.open.values())) + sum(map(len, self.closed.values()))

    def on_input(self, msg: MergerInput) -> list[MerchantMinuteRow]:
        part = self.parts.setdefault(msg.partition, _Part())
        if msg.watermark_us is not None and (
            part.watermark_us is None or msg.watermark_us > part.watermark_us
        ):
            part.watermark_us = msg.watermark_us
        part.idle = msg.idle

        corrected: dict[tuple[int, str], _Agg] = {}
        window_us = self.window_us
        for d in msg.deltas:
            start, merchant = d.window_start_us, d.merchant_id
            held = self.closed.get(start)
            agg = held.get(merchant) if held else None
            if agg is not None:
                agg.fold(d)
                corrected[(start, merchant)] = agg
                continue
            if start + window_us <= self.forgotten_before_us:
                self.dropped_deltas += 1
                continue
            bucket = self.open.get(start)
            if bucket is None:
                bucket = self.open[start] = {}
                self.next_end_us = min(self.next_end_us, start + window_us)
            agg = bucket.get(merchant)
            if agg is None:
                agg = bucket[merchant] = _Agg()
            agg.fold(d)

        rows = [self._emit(key, agg) for key, agg in sorted(corrected.items())]
        rows.extend(self._close())
        self._forget()
        return rows

    def all_idle(self) -> bool:
        """Every partition has reported and is idle: every window held is final."""
        return len(self.parts) == len(self.partitions) and all(p.idle for p in self.parts.values())

    def frontier_us(self) -> int | None:
        """Windows ending at or before this are final; None while any partition holds back."""
        if len(self.parts) < len(self.partitions):
            return None  # not heard from every partition yet
        busy = [p.watermark_us for p in self.parts.values() if not p.idle]
        if not busy:
            return 1 << 62
        if any(wm is None for wm in busy):
            return None
        return min(busy)  # type: ignore[type-var]

    def _close(self) -> list[MerchantMinuteRow]:
        frontier = self.frontier_us()
        if frontier is None or frontier < self.next_end_us:
            return []
        rows = []
        for start in sorted(s for s in self.open if s + self.window_us <= frontier):
            bucket = self.open.pop(start)
            done = self.closed.setdefault(start, {})
            for merchant in sorted(bucket):
                agg = bucket[merchant]
                rows.append(self._emit((start, merchant), agg))
                done[merchant] = agg
        self.next_end_us = min(self.open, default=1 << 62) + self.window_us
        return rows

    def _forget(self) -> None:
        if not self.closed:
            return
        marks = [p.watermark_us for p in self.parts.values()]
        limit = _NEVER
        if len(self.parts) == len(self.partitions) and all(m is not None for m in marks):
            # No partition can send anything more for these.
            limit = min(marks)  # type: ignore[type-var]
        known = [m for m in marks if m is not None]
        if known:
            limit = max(limit, max(known) - self.retention_us)
        if limit == _NEVER:
            return
        gone = [start for start in self.closed if start + self.window_us <= limit]
        for start in gone:
            del self.closed[start]
        if gone:
            self.forgotten_before_us = max(self.forgotten_before_us, max(gone) + self.window_us)

    def _emit(self, key: tuple[int, str], agg: _Agg) -> MerchantMinuteRow:
        agg.emitted += 1
        return MerchantMinuteRow(
            merchant_id=key[1],
            window_start_us=key[0],
            window_end_us=key[0] + self.window_us,
            txn_count=agg.count,
            sum_cents=agg.sum,
            min_cents=agg.min,
            max_cents=agg.max,
            distinct_cards=agg.distinct,
            alert_count=agg.alerts,
        )
