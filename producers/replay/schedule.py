"""When each row is sent, and with what event time.

A row is sent ``(recorded - first recorded) / speed`` seconds after the replay starts
(at once when as fast as possible, or when the recording goes back in time), so the
recording keeps its own order and spacing. Its event time keeps the recorded spacing at
any speed: the recorded time itself with ``--keep-time``, otherwise moved by one fixed
shift that puts the first row at the replay's start.

A consequence worth knowing: shifted and faster than real time, the rows run ahead of
the clock. A row more than 5 minutes ahead of its send time breaks the contracts (an
event in the future) and goes to the dead-letter topic, as it would in the flows;
replay faster than real time with ``--keep-time``.

The clock is injected (:class:`Clock`), so the schedule is tested without sleeping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from producers.replay.domains import ReplayError


class Clock(Protocol):
    def time(self) -> float:
        """Wall clock, seconds since the epoch."""
        ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class Schedule:
    """The pacing and the time shift of one replay."""

    first: datetime  # the first row's recorded time
    shift: timedelta  # added to every recorded time (zero with --keep-time)
    speed: float | None  # None: as fast as possible

    @classmethod
    def start(
        cls, first: datetime, *, started_at: float, speed: float | None, keep_time: bool
    ) -> Schedule:
        """The schedule of a replay whose first row is ``first`` and that starts at
        ``started_at`` (wall clock). The shift is in whole milliseconds, so shifted times
        keep the recording's own fractional digits."""
        if speed is not None and not (speed > 0):
            raise ReplayError(
                f"--speed {speed:g}: give a speed above 0 (1 is real time, 60 a minute a "
                "second), or --as-fast-as-possible"
            )
        if keep_time:
            return cls(first=first, shift=timedelta(0), speed=speed)
        now = datetime.fromtimestamp(round(started_at * 1000) / 1000, UTC)
        return cls(first=first, shift=now - first, speed=speed)

    def send_offset(self, recorded: datetime) -> float:
        """Seconds after the start at which a row recorded at ``recorded`` is due."""
        if self.speed is None:
            return 0.0
        return max(0.0, (recorded - self.first).total_seconds() / self.speed)

    def event_time(self, recorded: datetime) -> datetime:
        return recorded + self.shift

    def runs_ahead(self) -> bool:
        """Whether event times run ahead of the wall clock (shifted, faster than real)."""
        return self.shift != timedelta(0) and (self.speed is None or self.speed > 1)
