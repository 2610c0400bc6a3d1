"""What a room's air and light are at a moment, given who has been in it.

CO2 and the heat and moisture people add follow a first-order approach to the
equilibrium the current occupants set (``x → eq + (x - eq)·e^(-Δt/τ)``), advanced
exactly between the moments occupancy changes, so the values do not depend on how
often the devices report. On top come slow daily cycles (the temperature peaks in
the afternoon, the humidity before dawn) and daylight through the windows, whose
strength changes from day to day with the clouds.
"""

from __future__ import annotations

import math
import random
from typing import Final

from producers.iot.building import DAY_S, Room
from producers.iot.occupancy import HOUR, Occupancy

OUTDOOR_CO2_PPM: Final = 420.0
_HEAT_PER_PERSON_C: Final = 0.15
_HEAT_TAU_S: Final = 2400.0
_MOISTURE_PER_PERSON_PCT: Final = 0.8
_MOISTURE_TAU_S: Final = 1200.0
_DARK_LUX: Final = 1.5  # what a lux meter reads in a dark room: a little, never a flat 0


class RoomAir:
    """One room's physical state, advanced in time order to each reading's moment."""

    def __init__(self, room: Room, occupancy: Occupancy, seed: int, start: float) -> None:
        self.room = room
        self._occupancy = occupancy
        self._seed = seed
        self._cloud_day = -1
        self._cloud = 1.0
        # Start as if the room had held its current occupants for a long time.
        people = occupancy.people(room.index, start)
        self._t = start
        self._co2 = OUTDOOR_CO2_PPM + people * room.co2_per_person_ppm
        self._heat = people * _HEAT_PER_PERSON_C
        self._moisture = min(people, 10) * _MOISTURE_PER_PERSON_PCT

    def advance(self, t: float) -> None:
        """Move the state to ``t``; an earlier ``t`` leaves it where it is."""
        if t <= self._t:
            return
        room, occupancy = self.room, self._occupancy
        at = self._t
        for until in [*occupancy.changes(room.index, at, t), t]:
            people = occupancy.people(room.index, at)
            dt = until - at
            co2_eq = OUTDOOR_CO2_PPM + people * room.co2_per_person_ppm
            self._co2 = co2_eq + (self._co2 - co2_eq) * math.exp(-dt / room.co2_tau_s)
            heat_eq = people * _HEAT_PER_PERSON_C
            self._heat = heat_eq + (self._heat - heat_eq) * math.exp(-dt / _HEAT_TAU_S)
            wet_eq = min(people, 10) * _MOISTURE_PER_PERSON_PCT
            self._moisture = wet_eq + (self._moisture - wet_eq) * math.exp(-dt / _MOISTURE_TAU_S)
            at = until
        self._t = t

    def co2_ppm(self) -> float:
        return self._co2

    def temperature_c(self) -> float:
        hour = (self._t % DAY_S) / HOUR
        return self.room.temperature_c + 1.2 * math.sin(2 * math.pi * (hour - 9) / 24) + self._heat

    def humidity_pct(self) -> float:
        hour = (self._t % DAY_S) / HOUR
        diurnal = 1.5 * math.cos(2 * math.pi * (hour - 5) / 24)
        return self.room.humidity_pct + diurnal + self._moisture

    def light_lux(self) -> float:
        """Lamps when they are on, plus daylight between 6:00 and 18:00, plus the dark."""
        t = self._t
        hour = (t % DAY_S) / HOUR
        lux = _DARK_LUX
        if 6.0 < hour < 18.0:
            lux += (
                self.room.daylight_lux
                * self._cloudiness(t)
                * math.sin(math.pi * (hour - 6.0) / 12.0)
            )
        if self._occupancy.lights_on(self.room.index, t):
            lux += self.room.lamp_lux
        return lux

    def _cloudiness(self, t: float) -> float:
        """The share of a clear day's light that gets through today (0.3-1)."""
        day = math.floor(t / DAY_S)
        if day != self._cloud_day:
            rng = random.Random(f"{self._seed}:clouds:{day}")
            self._cloud_day, self._cloud = day, rng.uniform(0.3, 1.0)
        return self._cloud
