"""The items that travel between the IoT flow's steps (the kit's are in
:mod:`flows.kit.records`). Event times are integer microseconds since the epoch (UTC)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from flows.kit.records import ProcessedBatch
from riverbed import lake
from riverbed.contracts.iot import METRICS


@dataclass(slots=True)
class ReadingColumns:
    """Valid, first-seen readings of one batch, column by column (the kit's ``Rows``)."""

    reading_id: list[str] = field(default_factory=list)
    device_id: list[str] = field(default_factory=list)
    room_id: list[str] = field(default_factory=list)
    event_us: list[int] = field(default_factory=list)
    temperature_c: list[float | None] = field(default_factory=list)
    humidity_pct: list[float | None] = field(default_factory=list)
    light_lux: list[float | None] = field(default_factory=list)
    co2_ppm: list[float | None] = field(default_factory=list)
    late: list[bool] = field(default_factory=list)
    offset: list[int] = field(default_factory=list)
    produced_ms: list[int] = field(default_factory=list)  # metrics only, not a lake column

    def __len__(self) -> int:
        return len(self.offset)

    def columns(self) -> tuple[list, ...]:
        return (
            self.reading_id,
            self.device_id,
            self.room_id,
            self.event_us,
            self.temperature_c,
            self.humidity_pct,
            self.light_lux,
            self.co2_ppm,
            self.late,
            self.offset,
            self.produced_ms,
        )

    def take(self, keep: list[int]) -> ReadingColumns:
        out = ReadingColumns()
        for src, dst in zip(self.columns(), out.columns(), strict=True):
            dst.extend(src[i] for i in keep)
        return out

    def to_arrow(self, topic: str, partition: int) -> pa.Table:
        n = len(self)
        return pa.Table.from_arrays(
            [
                pa.array(self.reading_id, pa.string()),
                pa.array(self.device_id, pa.string()),
                pa.array(self.room_id, pa.string()),
                lake.utc_micros(self.event_us),
                *(pa.array(getattr(self, m), pa.float64()) for m in METRICS),
                pa.array(self.late, pa.bool_()),
                pa.repeat(pa.scalar(topic, pa.string()), n),
                pa.repeat(pa.scalar(partition, pa.int32()), n),
                pa.array(self.offset, pa.int64()),
            ],
            schema=lake.READINGS_SCHEMA,
        )


@dataclass(slots=True)
class AnomalyRecord:
    """An anomaly (the kit's ``Alert``): published to iot.anomalies, kept in the lake."""

    alert_id: str  # the anomaly_id
    rule: str
    device_id: str
    room_id: str
    reading_id: str
    metric: str | None
    value: float | None
    event_us: int
    detected_us: int
    score: float
    details: str
    offset: int  # of the reading that revealed it
    payload: bytes  # the Anomaly as JSON, as published
    produced_ms: int = -1

    @property
    def key(self) -> bytes:
        return self.device_id.encode()


def anomalies_table(anomalies: list[AnomalyRecord], topic: str, partition: int) -> pa.Table:
    n = len(anomalies)
    return pa.Table.from_arrays(
        [
            pa.array([a.alert_id for a in anomalies], pa.string()),
            pa.array([a.rule for a in anomalies], pa.string()),
            pa.array([a.device_id for a in anomalies], pa.string()),
            pa.array([a.room_id for a in anomalies], pa.string()),
            pa.array([a.reading_id for a in anomalies], pa.string()),
            pa.array([a.metric for a in anomalies], pa.string()),
            pa.array([a.value for a in anomalies], pa.float64()),
            lake.utc_micros([a.event_us for a in anomalies]),
            lake.utc_micros([a.detected_us for a in anomalies]),
            pa.array([a.score for a in anomalies], pa.float64()),
            pa.array([a.details for a in anomalies], pa.string()),
            pa.repeat(pa.scalar(topic, pa.string()), n),
            pa.repeat(pa.scalar(partition, pa.int32()), n),
            pa.array([a.offset for a in anomalies], pa.int64()),
        ],
        schema=lake.ANOMALIES_SCHEMA,
    )


@dataclass(slots=True)
class DeviceWindowRow:
    """One device's hopping window: its readings' count, and per measurement
    (count, sum, min, max) in :data:`METRICS` order (count 0: none)."""

    device_id: str
    room_id: str
    window_start_us: int
    window_end_us: int
    reading_count: int
    stats: tuple[tuple[int, float, float, float], ...]

    @property
    def key(self) -> tuple[str, int]:
        return (self.device_id, self.window_start_us)


def device_window_table(rows: list[DeviceWindowRow]) -> pa.Table:
    columns: list[pa.Array] = [
        pa.array([r.device_id for r in rows], pa.string()),
        pa.array([r.room_id for r in rows], pa.string()),
        lake.utc_micros([r.window_start_us for r in rows]),
        lake.utc_micros([r.window_end_us for r in rows]),
        pa.array([r.reading_count for r in rows], pa.int64()),
    ]
    for i in range(len(METRICS)):
        stats = [r.stats[i] for r in rows]
        columns += [
            pa.array([s[0] for s in stats], pa.int64()),
            pa.array([s[1] / s[0] if s[0] else None for s in stats], pa.float64()),
            pa.array([s[2] if s[0] else None for s in stats], pa.float64()),
            pa.array([s[3] if s[0] else None for s in stats], pa.float64()),
        ]
    return pa.Table.from_arrays(columns, schema=lake.DEVICE_WINDOW_SCHEMA)


@dataclass(slots=True)
class RoomReading:
    """A reading as the room join needs it: where, who, when, the joined measurements."""

    room_id: str
    reading_id: str
    device_id: str
    event_us: int
    co2_ppm: float | None
    light_lux: float | None
    humidity_pct: float | None
    partition: int
    offset: int


@dataclass(slots=True)
class RoomInput:
    """A partition's news for the room join: its on-time readings and its watermark."""

    partition: int
    readings: list[RoomReading]
    watermark_us: int | None
    idle: bool


@dataclass(slots=True)
class RoomStateRow:
    room_id: str
    reading_id: str
    device_id: str
    event_us: int
    co2_ppm: float
    light_lux: float | None
    humidity_pct: float | None
    light_lag_us: int | None
    humidity_lag_us: int | None
    occupied: bool | None
    partition: int
    offset: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.room_id, self.reading_id)


def room_state_table(rows: list[RoomStateRow], topic: str) -> pa.Table:
    n = len(rows)
    return pa.Table.from_arrays(
        [
            pa.array([r.room_id for r in rows], pa.string()),
            pa.array([r.reading_id for r in rows], pa.string()),
            pa.array([r.device_id for r in rows], pa.string()),
            lake.utc_micros([r.event_us for r in rows]),
            pa.array([r.co2_ppm for r in rows], pa.float64()),
            pa.array([r.light_lux for r in rows], pa.float64()),
            pa.array([r.humidity_pct for r in rows], pa.float64()),
            pa.array([_s(r.light_lag_us) for r in rows], pa.float64()),
            pa.array([_s(r.humidity_lag_us) for r in rows], pa.float64()),
            pa.array([r.occupied for r in rows], pa.bool_()),
            pa.repeat(pa.scalar(topic, pa.string()), n),
            pa.array([r.partition for r in rows], pa.int32()),
            pa.array([r.offset for r in rows], pa.int64()),
        ],
        schema=lake.ROOM_STATE_SCHEMA,
    )


def _s(us: int | None) -> float | None:
    return None if us is None else us / 1e6


@dataclass(slots=True)
class IotOutput:
    """What the IoT processor emits per source batch."""

    batch: ProcessedBatch
    windows: list[DeviceWindowRow]
    rooms: RoomInput | None

    @property
    def idle(self) -> bool:
        """The partition is caught up and quiet: ``windows`` holds every open window as it
        stands (an idle flush), and no more rows are expected from it soon."""
        return self.rooms is not None and self.rooms.idle
