"""Who is in each room when: the ground truth the readings follow.

A room's day is a list of visits (start, end, people), drawn from a random source
of its own per (seed, room, day). So the schedule of any day can be asked for at
any time, in any order, without disturbing the generator's stream: a test asks
:meth:`Occupancy.people` about moments the generator passed long ago.

Offices are occupied on weekdays from a morning arrival to an evening departure,
emptier over lunch, and now and then on a weekend afternoon; meeting rooms hold a
few booked meetings between 9:00 and 17:00 on weekdays. Nights are empty. Now and
then the last one out leaves the lights on for a while, so light alone does not
tell occupancy. Times are UTC: the building's local time is UTC.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from typing import Final

from producers.iot.building import DAY_S, MEETING, Room

HOUR: Final = 3600.0
_LIGHTS_LEFT_ON_SHARE: Final = 0.15
_DAY_OFF_SHARE: Final = 0.05  # a weekday the office stays empty (holidays, off-sites)
_WEEKEND_VISIT_SHARE: Final = 0.1
_CACHED_DAYS: Final = 4  # per room: the days the generator is in, and a few behind


@dataclass(frozen=True)
class Day:
    """One room's day: visits as parallel sorted lists, and when its lamps are on."""

    starts: tuple[float, ...]
    ends: tuple[float, ...]
    people: tuple[int, ...]
    lights: tuple[tuple[float, float], ...]
    moments: tuple[float, ...]  # when the number of people changes, sorted


class Occupancy:
    """The occupancy schedules of a building's rooms, built per day on demand."""

    def __init__(self, rooms: tuple[Room, ...], seed: int) -> None:
        self._rooms = rooms
        self._seed = seed
        self._days: dict[tuple[int, int], Day] = {}

    def people(self, room: int, t: float) -> int:
        """How many people are in room ``room`` (its index) at ``t``."""
        day = self.day(room, t)
        i = bisect.bisect_right(day.starts, t) - 1
        return day.people[i] if i >= 0 and t < day.ends[i] else 0

    def occupied(self, room: int, t: float) -> bool:
        return self.people(room, t) > 0

    def lights_on(self, room: int, t: float) -> bool:
        return any(start <= t < end for start, end in self.day(room, t).lights)

    def changes(self, room: int, after: float, until: float) -> list[float]:
        """The moments in (after, until) when the number of people changes."""
        moments: list[float] = []
        for day_index in range(math.floor(after / DAY_S), math.floor(until / DAY_S) + 1):
            day = self._day(room, day_index).moments
            moments += day[bisect.bisect_right(day, after) : bisect.bisect_left(day, until)]
        return moments

    def day(self, room: int, t: float) -> Day:
        return self._day(room, math.floor(t / DAY_S))

    def _day(self, room: int, day_index: int) -> Day:
        key = (room, day_index)
        day = self._days.get(key)
        if day is None:
            if len(self._days) >= _CACHED_DAYS * len(self._rooms):
                # A long run moves on; the days it left can be rebuilt if asked for.
                self._days = {k: v for k, v in self._days.items() if k[1] >= day_index - 1}
            rng = random.Random(f"{self._seed}:occupancy:{room}:{day_index}")
            day = plan_day(self._rooms[room], day_index, rng)
            self._days[key] = day
        return day


def plan_day(room: Room, day_index: int, rng: random.Random) -> Day:
    """One day's visits of ``room``; ``day_index`` counts days since 1970-01-01 (a Thursday)."""
    midnight = day_index * DAY_S
    weekday = (day_index + 3) % 7  # Monday is 0
    if room.kind == MEETING:
        visits = _meetings(room, rng) if weekday < 5 else []
    elif weekday < 5:
        visits = _office_day(room, rng) if rng.random() >= _DAY_OFF_SHARE else []
    else:
        visits = _weekend_visit(room, rng) if rng.random() < _WEEKEND_VISIT_SHARE else []
    visits = [(midnight + s, midnight + e, n) for s, e, n in visits]
    lights = [(s, e) for s, e, n in visits if n > 0]
    if lights and rng.random() < _LIGHTS_LEFT_ON_SHARE:
        s, e = lights[-1]
        lights[-1] = (s, e + rng.uniform(600.0, 2400.0))
    return Day(
        starts=tuple(v[0] for v in visits),
        ends=tuple(v[1] for v in visits),
        people=tuple(v[2] for v in visits),
        lights=tuple(lights),
        moments=tuple(sorted({m for s, e, _ in visits for m in (s, e)})),
    )


def _office_day(room: Room, rng: random.Random) -> list[tuple[float, float, int]]:
    """Arrive 7:30-9:30, lunch 12:00-13:30 (half an hour to an hour, one may stay),
    leave 16:30-18:30."""
    team = rng.randint(max(1, (room.seats + 1) // 2), room.seats)
    arrive = rng.uniform(7.5, 9.5) * HOUR
    lunch = rng.uniform(12.0, 13.0) * HOUR
    back = lunch + rng.uniform(0.5, 1.0) * HOUR
    leave = rng.uniform(16.5, 18.5) * HOUR
    staying = 1 if rng.random() < 0.4 else 0
    visits = [(arrive, lunch, team), (back, leave, team)]
    if staying:
        visits.insert(1, (lunch, back, staying))
    return visits


def _meetings(room: Room, rng: random.Random) -> list[tuple[float, float, int]]:
    """Two to five meetings of 30-90 minutes, booked on the half hour from 9:00 to 17:00;
    people arrive up to 5 minutes late and leave up to 5 minutes early."""
    free = list(range(18, 34))  # half hours from 9:00 to 16:30
    meetings = []
    for _ in range(rng.randint(2, 5)):
        length = rng.choice((1, 2, 2, 3))
        options = [h for h in free if all(h + k in free for k in range(length))]
        if not options:
            break
        first = rng.choice(options)
        for k in range(length):
            free.remove(first + k)
        start = first * 1800.0 + rng.uniform(0.0, 300.0)
        end = (first + length) * 1800.0 - rng.uniform(0.0, 300.0)
        meetings.append((start, end, rng.randint(3, room.seats)))
    meetings.sort()
    return meetings


def _weekend_visit(room: Room, rng: random.Random) -> list[tuple[float, float, int]]:
    start = rng.uniform(10.0, 14.0) * HOUR
    return [(start, start + rng.uniform(1.5, 4.0) * HOUR, rng.randint(1, 2))]
