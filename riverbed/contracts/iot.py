"""The IoT contract: sensor readings, anomalies and device baselines on the wire.

A device in a room measures some of temperature, humidity, light and CO2 and
publishes one reading at a time to ``iot.readings``, keyed by ``device_id``. A
reading field it does not measure is absent or null; at least one is present.
As for payments, ``decode_reading`` turns any bytes at all into a reading or an
:class:`~riverbed.contracts.wire.InvalidEvent` naming the field and the rule.

The ranges are what the sensors can physically report (a DHT22/SHT-class climate
sensor, a photodiode lux meter, an NDIR CO2 sensor), not what is normal: a reading
inside them but far from its device's usual is an anomaly for the flow to find,
not a broken message.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from riverbed.contracts.wire import (
    InvalidEvent,
    check_event_time,
    decode_error,
    encode,
    from_micros,
    micros,
)

__all__ = [
    "METRICS",
    "RANGES",
    "Anomaly",
    "DeviceBaseline",
    "HourBaseline",
    "InvalidEvent",
    "MetricBaseline",
    "Reading",
    "decode_baseline",
    "decode_reading",
    "decode_reading_at",
    "encode",
]


# The measurements a reading may carry, and the physical range of each (inclusive).
METRICS: tuple[str, ...] = ("temperature_c", "humidity_pct", "light_lux", "co2_ppm")
RANGES: dict[str, tuple[float, float]] = {
    "temperature_c": (-40.0, 125.0),
    "humidity_pct": (0.0, 100.0),
    "light_lux": (0.0, 200_000.0),
    "co2_ppm": (0.0, 40_000.0),
}


class Reading(msgspec.Struct, frozen=True):
    """One sensor reading, as devices (and ``riverbed replay``) publish it to ``iot.readings``.

    ``reading_id`` is unique per real reading; a device may send the same reading
    again (a retry), and the flow keeps it once.
    """

    reading_id: str
    device_id: str
    room_id: str
    event_time: str  # RFC 3339 with an offset
    temperature_c: float | None = None
    humidity_pct: float | None = None
    light_lux: float | None = None
    co2_ppm: float | None = None


class Anomaly(msgspec.Struct, frozen=True):
    """An anomaly the IoT flow found, as published to ``iot.anomalies`` (keyed by device).

    ``rule`` is one of ``range``, ``baseline``, ``flatline``, ``dropout``. A dropout is
    found as a gap in event time, so it has no ``reading_id``, ``metric`` or ``value``
    of its own: ``reading_id`` is the reading that ended the gap.
    """

    anomaly_id: str
    rule: str
    device_id: str
    room_id: str
    reading_id: str
    metric: str | None
    value: float | None
    event_time: str
    detected_at: str
    score: float
    details: str


class MetricBaseline(msgspec.Struct, frozen=True, array_like=True):
    """One measurement's usual value in one hour of day: ``[mean, std, count]``.

    ``std`` is the sample standard deviation, None below two readings.
    """

    mean: float
    std: float | None
    count: int


class HourBaseline(msgspec.Struct, frozen=True):
    """A device's baseline in one UTC hour of day (0-23): per measurement, or None."""

    hour: int
    temperature_c: MetricBaseline | None = None
    humidity_pct: MetricBaseline | None = None
    light_lux: MetricBaseline | None = None
    co2_ppm: MetricBaseline | None = None


class DeviceBaseline(msgspec.Struct, frozen=True):
    """A device's usual readings per hour of day, computed from the lake by the batch
    layer and published to ``iot.device_baselines`` (compacted, keyed by device_id:
    the latest per device). Hours without readings are left out."""

    device_id: str
    room_id: str
    hours: list[HourBaseline]
    reading_count: int
    last_event_time: str  # RFC 3339: the newest reading the baseline includes
    computed_at: str  # RFC 3339, wall clock
    window_days: int


_decoder = msgspec.json.Decoder(Reading)
_baseline_decoder = msgspec.json.Decoder(DeviceBaseline)


def decode_baseline(raw: bytes) -> DeviceBaseline:
    """A device baseline from ``iot.device_baselines`` (its own publisher wrote it)."""
    return _baseline_decoder.decode(raw)


def decode_reading(raw: bytes | None, now: datetime | None = None) -> tuple[Reading, datetime]:
    """Decode and check one message value; return the reading and its UTC event time.

    ``now`` decides what "in the future" means (the flow passes the message's Kafka
    timestamp, so a replay judges as the live run did); it defaults to the wall clock.
    """
    reading, event_us = decode_reading_at(raw, None if now is None else micros(now))
    return reading, from_micros(event_us)


def decode_reading_at(raw: bytes | None, now_us: int | None) -> tuple[Reading, int]:
    """:func:`decode_reading` with times in microseconds since the epoch (the flow's)."""
    if raw is None:
        raise InvalidEvent("value: message has no value (tombstone)")
    try:
        reading = _decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise decode_error(exc) from None
    return reading, check_rules(reading, now_us)


def check_rules(reading: Reading, now_us: int | None = None) -> int:
    """Check the rules types alone do not; return the event time in µs since the epoch."""
    for name in ("reading_id", "device_id", "room_id"):
        if not getattr(reading, name).strip():
            raise InvalidEvent(f"{name}: must be a non-empty string")
    present = 0
    for name in METRICS:
        value = getattr(reading, name)
        if value is None:
            continue
        present += 1
        low, high = RANGES[name]
        # NaN fails both comparisons, so it is caught here too.
        if not (low <= value <= high):
            raise InvalidEvent(f"{name}: {value!r} must be within {low:g}..{high:g}")
    if not present:
        raise InvalidEvent(f"value: a reading needs at least one of {', '.join(METRICS)}")
    return check_event_time(reading.event_time, now_us)
