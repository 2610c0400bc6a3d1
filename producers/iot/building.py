"""The generator's settings and the building it simulates: rooms and their devices.

A room is an office (a team at desks on working days) or a meeting room (booked
meetings); each has three devices, ``<room>-climate`` (temperature and humidity),
``<room>-light`` (illuminance) and ``<room>-air`` (CO2). What makes rooms differ
(size, lamps, windows, ventilation) is drawn once from the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from riverbed.settings import Settings

OFFICE: Final = "office"
MEETING: Final = "meeting"

CLIMATE: Final = "climate"
LIGHT: Final = "light"
AIR: Final = "air"
# What each kind of device measures, in the contract's field names.
DEVICE_METRICS: Final[dict[str, tuple[str, ...]]] = {
    CLIMATE: ("temperature_c", "humidity_pct"),
    LIGHT: ("light_lux",),
    AIR: ("co2_ppm",),
}

DAY_S: Final = 86_400.0


@dataclass(frozen=True)
class IotConfig:
    """How big the building is, how often devices report, and how often things go wrong.

    ``invalid_share`` and ``duplicate_share`` are of the messages published,
    ``spike_share`` of the readings of devices in no episode; episode rates are per
    device and per day of event time (at the defaults and 8 rooms: about 100 spikes,
    one drift, five flat lines, seven dropouts and one skewed clock a day, over 207,000
    readings).
    """

    rooms: int = 8
    interval_s: float = 10.0
    jitter_s: float = 0.5  # each reading lands within ±jitter of its device's slot
    spike_share: float = 0.0005
    drift_per_device_day: float = 0.05
    flatline_per_device_day: float = 0.2
    dropout_per_device_day: float = 0.3
    skew_per_device_day: float = 0.05
    invalid_share: float = 0.005
    duplicate_share: float = 0.01

    def __post_init__(self) -> None:
        if self.rooms < 1:
            raise ValueError("rooms must be >= 1")
        if self.interval_s <= 0 or not 0 <= self.jitter_s < self.interval_s / 2:
            raise ValueError("interval_s must be > 0 and jitter_s within [0, interval_s / 2)")
        if self.invalid_share + self.duplicate_share >= 0.5:
            raise ValueError("invalid + duplicate shares must stay below 0.5")

    @classmethod
    def from_settings(cls, settings: Settings, *, rooms: int | None = None) -> IotConfig:
        """The noise shares every producer shares (``RIVERBED_PRODUCER_INVALID_SHARE``,
        ``..._DUPLICATE_SHARE``); the rest are this module's defaults."""
        return cls(
            rooms=cls.rooms if rooms is None else rooms,
            invalid_share=settings.producer_invalid_share,
            duplicate_share=settings.producer_duplicate_share,
        )

    @property
    def devices(self) -> int:
        return self.rooms * len(DEVICE_METRICS)

    @property
    def live_rate(self) -> float:
        """Readings per second of event time: what the building sends live."""
        return self.devices / self.interval_s


@dataclass(frozen=True)
class Room:
    """One room and the constants of its physics."""

    index: int
    room_id: str
    kind: str  # OFFICE or MEETING
    seats: int  # most people the room holds
    lamp_lux: float  # lights on, at the desks
    daylight_lux: float  # through the windows at a clear noon
    co2_per_person_ppm: float  # rise above outdoor air per person, at equilibrium
    co2_tau_s: float  # ventilation time constant
    temperature_c: float  # the room's mean temperature
    humidity_pct: float  # the room's mean humidity, empty


@dataclass(frozen=True)
class Device:
    index: int
    device_id: str
    kind: str  # CLIMATE, LIGHT or AIR
    room: Room
    metrics: tuple[str, ...]
    key: bytes  # device_id as the message key


def build_rooms(rng: random.Random, config: IotConfig) -> tuple[Room, ...]:
    """Every other room is a meeting room; sizes and fittings drawn from the seed.

    An office's equilibrium CO2 with everyone in is about 1,000-1,400 ppm, a full
    meeting room's a little more: what an adequately ventilated room measures.
    """
    rooms = []
    for i in range(config.rooms):
        kind = OFFICE if i % 2 == 0 else MEETING
        seats = rng.randint(3, 8) if kind == OFFICE else rng.randint(6, 12)
        rooms.append(
            Room(
                index=i,
                room_id=f"room-{i + 1:02d}",
                kind=kind,
                seats=seats,
                lamp_lux=rng.uniform(320.0, 650.0),
                daylight_lux=rng.uniform(40.0, 220.0),
                co2_per_person_ppm=rng.uniform(700.0, 950.0) / seats,
                co2_tau_s=rng.uniform(1800.0, 3000.0),
                temperature_c=rng.uniform(20.5, 22.5),
                humidity_pct=rng.uniform(35.0, 48.0),
            )
        )
    return tuple(rooms)


def build_devices(rooms: tuple[Room, ...]) -> tuple[Device, ...]:
    devices = []
    for room in rooms:
        for kind, metrics in DEVICE_METRICS.items():
            device_id = f"{room.room_id}-{kind}"
            devices.append(Device(len(devices), device_id, kind, room, metrics, device_id.encode()))
    return tuple(devices)
