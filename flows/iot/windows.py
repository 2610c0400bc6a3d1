"""Hopping event-time windows per device, inside each partition's processor.

A device's readings all land in one Kafka partition (the key is ``device_id``), so,
unlike payments' merchant windows, a device's windows need no merge across
partitions: the partition's watermark (its newest event time minus the allowed
lateness, judged before each reading moves it, as in payments) closes them. A window
is ``window_us`` long and one starts every ``hop_us``, so a reading joins
``window_us / hop_us`` windows. A late reading (older than the watermark) joins none.

Idle partitions: when its partition is caught up and quiet, a processor writes every
open window as it stands (an *idle flush*) and keeps it open; a later reading updates
it and the window is written again when it closes. The lake upserts windows and keeps
the row with more readings, so neither the flush nor a replay moves one back.
"""

from __future__ import annotations

from flows.iot.config import IotConfig
from flows.iot.records import DeviceWindowRow
from riverbed.contracts.iot import METRICS

_EMPTY = (0, 0.0, 0.0, 0.0)


class _Acc:
    """One (device, window): readings, and per measurement (count, sum, min, max)."""

    __slots__ = ("count", "room", "stats", "written")

    def __init__(self, room: str) -> None:
        self.room = room
        self.count = 0
        self.stats: list[tuple[int, float, float, float]] = [_EMPTY] * len(METRICS)
        self.written = 0  # the count when last written (idle flush)

    def __getstate__(self) -> tuple:
        return (self.room, self.count, self.stats, self.written)

    def __setstate__(self, s: tuple) -> None:
        self.room, self.count, self.stats, self.written = s

    def add(self, room: str, values: tuple[float | None, ...]) -> None:
        self.room = room
        self.count += 1
        stats = self.stats
        for i, v in enumerate(values):
            if v is None:
                continue
            n, total, low, high = stats[i]
            stats[i] = (1, v, v, v) if n == 0 else (n + 1, total + v, min(low, v), max(high, v))

    def row(self, device: str, start: int, window_us: int) -> DeviceWindowRow:
        return DeviceWindowRow(
            device, self.room, start, start + window_us, self.count, tuple(self.stats)
        )


class DeviceWindows:
    """One partition's watermark and its open device windows."""

    def __init__(self, config: IotConfig) -> None:
        self.window_us = config.window_us
        self.hop_us = config.hop_us
        self.lateness_us = config.allowed_lateness_us
        self.max_event_us: int | None = None
        self.watermark_us: int | None = None
        self.open: dict[tuple[int, str], _Acc] = {}
        self._next_end = 1 << 62

    def configure(self, config: IotConfig) -> None:
        self.lateness_us = config.allowed_lateness_us

    def is_late(self, event_us: int) -> bool:
        wm = self.watermark_us
        return wm is not None and event_us < wm

    def add(self, event_us: int, device: str, room: str, values: tuple[float | None, ...]) -> None:
        """An on-time reading joins every window that covers it."""
        hop, width = self.hop_us, self.window_us
        last_start = event_us - event_us % hop
        start = last_start - width + hop
        while start <= last_start:
            key = (start, device)
            acc = self.open.get(key)
            if acc is None:
                acc = self.open[key] = _Acc(room)
                if start + width < self._next_end:
                    self._next_end = start + width
            acc.add(room, values)
            start += hop

    def observe(self, event_us: int) -> None:
        """Move the watermark (after the reading was judged and added)."""
        if self.max_event_us is None or event_us > self.max_event_us:
            self.max_event_us = event_us
            self.watermark_us = event_us - self.lateness_us

    def close_ready(self) -> list[DeviceWindowRow]:
        """Every window the watermark has passed, written and forgotten."""
        wm = self.watermark_us
        if wm is None or wm < self._next_end:
            return []
        out, keep, next_end = [], {}, 1 << 62
        for key in sorted(self.open):
            acc = self.open[key]
            end = key[0] + self.window_us
            if end <= wm:
                if acc.count != acc.written:
                    out.append(acc.row(key[1], key[0], self.window_us))
            else:
                keep[key] = acc
                next_end = min(next_end, end)
        self.open = keep
        self._next_end = next_end
        return out

    def flush_open(self) -> list[DeviceWindowRow]:
        """Every open window as it stands, kept open (idle flush)."""
        out = []
        for key in sorted(self.open):
            acc = self.open[key]
            if acc.count != acc.written:
                acc.written = acc.count
                out.append(acc.row(key[1], key[0], self.window_us))
        return out
