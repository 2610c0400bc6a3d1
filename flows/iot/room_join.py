"""The interval join of a room's sensors: CO2 readings with the room's nearest light
and humidity readings within ``join_interval_us`` of them in event time.

A room's sensors are separate devices (a CO2 meter, a light meter, a climate sensor),
keyed by device, so they land in different Kafka partitions and reach the flow in any
order. The join therefore runs after the partition processors, in one stateful step
for the flow (like payments' window merger: it needs every partition's watermark,
and rooms are few), and a CO2 reading at ``t`` (the *anchor*) is decided only when
every partition that is not idle has a watermark past ``t + interval``: from then on
no on-time reading can fall in its interval, so the result is the join of all on-time
readings, whatever order they arrived in. Late readings (set aside by their
partition) are not joined.

The result, one row per anchor: the nearest light and humidity readings (smallest
time difference, then the earlier, then the smaller reading id; a reading carrying
several measurements can match itself), their lags, and ``occupied``: light at least
``occupied_lux`` and CO2 at least ``occupied_co2_ppm`` (None without a light reading).

State stays bounded: a candidate older than every pending anchor's interval, and
the room's watermark minus the interval, can match nothing more and is dropped;
dropped candidates that matched no anchor are counted (``unmatched``), as are anchors
without a light or a humidity match. When every partition is idle, every pending
anchor is decided; a reading that arrives for it later is counted, not joined.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field

from flows.iot.config import IotConfig
from flows.iot.records import RoomInput, RoomReading, RoomStateRow

_INF = 1 << 62


@dataclass
class _Room:
    anchors: list[tuple[int, str, RoomReading]] = field(default_factory=list)
    # (event_us, reading_id, value, used)
    light: list[list] = field(default_factory=list)
    humidity: list[list] = field(default_factory=list)


@dataclass
class RoomJoin:
    partitions: tuple[int, ...]
    interval_us: int
    occupied_lux: float
    occupied_co2_ppm: float
    watermarks: dict[int, int | None] = field(default_factory=dict)
    idle: dict[int, bool] = field(default_factory=dict)
    rooms: dict[str, _Room] = field(default_factory=dict)
    unmatched: dict[str, int] = field(default_factory=dict)  # side -> count

    @classmethod
    def for_partitions(cls, partitions: list[int], config: IotConfig) -> RoomJoin:
        return cls(
            tuple(sorted(partitions)),
            config.join_interval_us,
            config.occupied_lux,
            config.occupied_co2_ppm,
        )

    def configure(self, config: IotConfig) -> None:
        self.occupied_lux = config.occupied_lux
        self.occupied_co2_ppm = config.occupied_co2_ppm

    def watermark(self) -> int | None:
        """How far every busy partition has come (None: one has not said yet)."""
        lowest = _INF
        for p in self.partitions:
            if self.idle.get(p):
                continue
            wm = self.watermarks.get(p)
            if wm is None:
                return None
            lowest = min(lowest, wm)
        return lowest

    def all_idle(self) -> bool:
        """Every partition has said it is idle: every pending anchor was joined."""
        return all(self.idle.get(p) for p in self.partitions)

    def on_input(self, msg: RoomInput) -> list[RoomStateRow]:
        wm = self.watermarks.get(msg.partition)
        if msg.watermark_us is not None and (wm is None or msg.watermark_us > wm):
            self.watermarks[msg.partition] = msg.watermark_us
        self.idle[msg.partition] = msg.idle
        for r in msg.readings:
            room = self.rooms.get(r.room_id)
            if room is None:
                room = self.rooms[r.room_id] = _Room()
            if r.co2_ppm is not None:
                insort(room.anchors, (r.event_us, r.reading_id, r))
            if r.light_lux is not None:
                insort(room.light, [r.event_us, r.reading_id, r.light_lux, False])
            if r.humidity_pct is not None:
                insort(room.humidity, [r.event_us, r.reading_id, r.humidity_pct, False])
        return self.decide()

    def decide(self) -> list[RoomStateRow]:
        """Join every anchor whose interval no on-time reading can enter any more."""
        wm = self.watermark()
        if wm is None:
            return []
        out: list[RoomStateRow] = []
        for room_id in sorted(self.rooms):
            room = self.rooms[room_id]
            ready = 0
            while ready < len(room.anchors) and room.anchors[ready][0] + self.interval_us < wm:
                ready += 1
            for t, _rid, anchor in room.anchors[:ready]:
                out.append(self._row(room_id, room, t, anchor))
            del room.anchors[:ready]
            horizon = min(room.anchors[0][0] if room.anchors else _INF, wm) - self.interval_us
            for side, values in (("light", room.light), ("humidity", room.humidity)):
                cut = bisect_left(values, [horizon])
                dropped = sum(1 for v in values[:cut] if not v[3])
                if dropped:
                    self.unmatched[side] = self.unmatched.get(side, 0) + dropped
                del values[:cut]
        return out

    def _row(self, room_id: str, room: _Room, t: int, anchor: RoomReading) -> RoomStateRow:
        light = self._nearest(room.light, t)
        humidity = self._nearest(room.humidity, t)
        for side, found in (("anchor_without_light", light), ("anchor_without_humidity", humidity)):
            if found is None:
                self.unmatched[side] = self.unmatched.get(side, 0) + 1
        co2 = anchor.co2_ppm
        assert co2 is not None
        occupied = None
        if light is not None:
            occupied = light[2] >= self.occupied_lux and co2 >= self.occupied_co2_ppm
        return RoomStateRow(
            room_id=room_id,
            reading_id=anchor.reading_id,
            device_id=anchor.device_id,
            event_us=t,
            co2_ppm=co2,
            light_lux=None if light is None else light[2],
            humidity_pct=None if humidity is None else humidity[2],
            light_lag_us=None if light is None else light[0] - t,
            humidity_lag_us=None if humidity is None else humidity[0] - t,
            occupied=occupied,
            partition=anchor.partition,
            offset=anchor.offset,
        )

    def _nearest(self, values: list[list], t: int) -> list | None:
        """The candidate nearest ``t`` within the interval (ties: earlier, then lower id)."""
        i = bisect_left(values, [t - self.interval_us])
        best = None
        while i < len(values) and values[i][0] <= t + self.interval_us:
            v = values[i]
            if best is None or abs(v[0] - t) < abs(best[0] - t):
                best = v
            i += 1
        if best is not None:
            best[3] = True
        return best
