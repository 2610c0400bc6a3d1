"""The replay itself: rows in, messages out, on the recording's own schedule.

Each row is judged at the moment it is sent, by the domain's own contract and against
that moment (as the flows judge a message against its Kafka timestamp): one that fits
goes to the domain's topic under its key; one that does not goes to the domain's
dead-letter topic as it is in the file, with the reason in the ``error`` header and
``source.file`` / ``source.line`` saying where it came from. Either way the replay goes
on.

The Kafka side is the project's producer (:mod:`producers.kafka_loop`): its client and
producer settings, its delivery accounting, its handling of Ctrl-C, SIGTERM and refused
credentials, and its final flush. :class:`Replayer` itself only sees a ``send`` and a
``poll`` callable, so the schedule is tested without a broker and without sleeping.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import msgspec

from producers.kafka_loop import (
    ProgressCallback,
    SendCounts,
    counting_producer,
    flush_remaining,
    produce_when_room,
    producer_config,
)
from producers.replay.domains import EVENT_TIME, Domain, ReplayError, domain
from producers.replay.mapping import TIME_FORMATS, RowError, RowMapping, format_time
from producers.replay.recording import CsvRow, Recording
from producers.replay.schedule import Clock, Schedule, SystemClock
from riverbed.contracts.wire import InvalidEvent
from riverbed.settings import Settings

log = logging.getLogger("riverbed.replay")

_MAX_SLEEP_S = 0.2  # so a stop request and progress are seen while waiting for a row
_POLL_EVERY_ROWS = 1000  # delivery reports are served at least this often when not waiting


@dataclass(frozen=True)
class ReplayOptions:
    """What ``riverbed replay`` was asked to do."""

    domain: str
    path: Path
    time_column: str
    maps: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()
    id_column: str | None = None
    speed: float | None = 1.0  # None: as fast as possible
    keep_time: bool = False
    time_zone: str = "UTC"


@dataclass(frozen=True)
class Outgoing:
    """One message the replay sends."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    row: int = 0  # the data row it came from


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay did. ``ok`` is False if a message was not delivered (a row in the
    dead-letter topic is not a failure: it was delivered there)."""

    domain: str
    topic: str
    dlq: str
    rows: int  # rows read
    published: int
    dead_letters: Mapping[str, int]  # per reason kind: the field named, or "row", "time"
    examples: Mapping[str, str]  # per reason kind: its first full reason
    first_recorded: datetime | None
    last_recorded: datetime | None
    wall_s: float
    stopped_by: str  # "exhausted", "interrupted" or "refused"
    failed: int = 0
    undelivered: int = 0
    first_error: str | None = None

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letters.values())

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.undelivered == 0

    def lines(self) -> list[str]:
        """The end-of-run report, a few human lines."""
        span = "no recorded time"
        if self.first_recorded is not None and self.last_recorded is not None:
            seconds = (self.last_recorded - self.first_recorded).total_seconds()
            span = (
                f"recorded {format_time(self.first_recorded)} .. "
                f"{format_time(self.last_recorded)} ({_duration(seconds)})"
            )
        rate = self.rows / self.wall_s if self.wall_s > 0 else 0.0
        lines = [
            f"replay {self.domain}: read {self.rows:,} rows, published {self.published:,} "
            f"to {self.topic}, {self.dead_lettered:,} to {self.dlq}",
            f"  {span}; wall time {_duration(self.wall_s)} ({rate:,.0f} rows/s)"
            + (", interrupted" if self.stopped_by == "interrupted" else ""),
        ]
        for kind, count in sorted(self.dead_letters.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  dead letters, {kind}: {count:,} (e.g. {self.examples[kind]})")
        if not self.ok or self.stopped_by == "refused":
            lines.append(
                f"  NOT DELIVERED: failed {self.failed:,}, undelivered {self.undelivered:,}"
                + (f"; first error: {self.first_error}" if self.first_error else "")
            )
        return lines


class StopFlag(Protocol):
    @property
    def requested(self) -> bool: ...


@dataclass
class _Tally:
    published: int = 0
    dead: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    first: datetime | None = None
    last: datetime | None = None

    def dead_letter(self, reason: str) -> None:
        kind = reason.split(":", 1)[0]
        self.dead[kind] += 1
        self.examples.setdefault(kind, reason)

    def recorded(self, when: datetime) -> None:
        self.first = when if self.first is None else min(self.first, when)
        self.last = when if self.last is None else max(self.last, when)


class Replayer:
    """Sends a recording's rows on its schedule, through ``send``; Kafka-free."""

    def __init__(
        self,
        dom: Domain,
        recording: Recording,
        mapping: RowMapping,
        options: ReplayOptions,
        *,
        clock: Clock,
        progress: ProgressCallback | None = None,
        progress_interval_s: float = 5.0,
    ) -> None:
        self.domain = dom
        self.recording = recording
        self.mapping = mapping
        self.options = options
        self.clock = clock
        self._progress = progress
        self._interval = progress_interval_s
        self._source_file = str(recording.path.resolve()).encode()
        self.tally = _Tally()

    def run(
        self,
        send: Callable[[Outgoing], None],
        poll: Callable[[float], object],
        stop: StopFlag,
    ) -> str:
        """Send every row; return why it stopped: "exhausted" or "interrupted"."""
        rows = self.recording.rows_iter()
        first_row = next(rows, None)
        if first_row is None:
            return "exhausted"
        schedule = self._schedule(first_row)
        if schedule.runs_ahead():
            self._say(
                "shifted and faster than real time, event times run ahead of the clock: rows "
                "more than 5 minutes ahead of their send time break the contract and go to "
                f"{self.domain.dlq}; to replay faster than real time, add --keep-time"
            )
        started = self.clock.monotonic()
        report = _Progress(self, started)
        for row in itertools.chain((first_row,), rows):
            if stop.requested:
                return "interrupted"
            try:
                recorded = self.mapping.recorded_time(row.cells)
            except RowError as exc:
                self._send_dead(send, row, str(exc), key=None)
                continue
            due = started + schedule.send_offset(recorded)
            while not stop.requested:
                now = self.clock.monotonic()
                report.maybe(now, row, recorded, due)
                if now >= due:
                    break
                poll(0)
                self.clock.sleep(min(due - now, _MAX_SLEEP_S))
            if stop.requested:
                return "interrupted"
            self.tally.recorded(recorded)
            self._send_row(send, row, schedule.event_time(recorded))
            if row.number % _POLL_EVERY_ROWS == 0:
                poll(0)
        return "exhausted"

    def summary(
        self,
        wall_s: float,
        stopped_by: str,
        *,
        failed: int = 0,
        undelivered: int = 0,
        first_error: str | None = None,
    ) -> ReplaySummary:
        t = self.tally
        return ReplaySummary(
            domain=self.domain.name,
            topic=self.domain.topic,
            dlq=self.domain.dlq,
            rows=t.rows,
            published=t.published,
            dead_letters=dict(t.dead),
            examples=dict(t.examples),
            first_recorded=t.first,
            last_recorded=t.last,
            wall_s=wall_s,
            stopped_by=stopped_by,
            failed=failed,
            undelivered=undelivered,
            first_error=first_error,
        )

    # --- one row ---------------------------------------------------------------------

    def _schedule(self, first_row: CsvRow) -> Schedule:
        try:
            first = self.mapping.recorded_time(first_row.cells)
        except RowError as exc:
            raise ReplayError(
                f"row 1 (line {first_row.line}): {str(exc).removeprefix('time: ')}; the first "
                f"row sets the schedule, so its time must parse: give --time-column the column "
                f"that holds the recorded time ({TIME_FORMATS})"
            ) from None
        return Schedule.start(
            first,
            started_at=self.clock.time(),
            speed=self.options.speed,
            keep_time=self.options.keep_time,
        )

    def _send_row(
        self, send: Callable[[Outgoing], None], row: CsvRow, event_time: datetime
    ) -> None:
        dom = self.domain
        try:
            fields = self.mapping.fields_of(row.cells)
        except RowError as exc:
            self._send_dead(send, row, str(exc), key=None)
            return
        fields.setdefault(dom.id_field, self.recording.row_id(row.number))
        fields[EVENT_TIME] = format_time(event_time)
        ordered = {name: fields[name] for name in dom.fields if name in fields}
        value = msgspec.json.encode(ordered)
        key_value = ordered.get(dom.key_field)
        key = key_value.encode() if isinstance(key_value, str) else None
        now = datetime.fromtimestamp(self.clock.time(), UTC)
        try:
            dom.decode(value, now)
        except InvalidEvent as exc:
            self._send_dead(send, row, str(exc), key=key)
            return
        send(Outgoing(topic=dom.topic, key=key, value=value, row=row.number))
        self.tally.rows += 1
        self.tally.published += 1

    def _send_dead(
        self, send: Callable[[Outgoing], None], row: CsvRow, reason: str, key: bytes | None
    ) -> None:
        headers = (
            ("error", reason.encode()),
            ("source.file", self._source_file),
            ("source.line", str(row.line).encode()),
        )
        send(
            Outgoing(
                topic=self.domain.dlq,
                key=key,
                value=row.raw.encode(),
                headers=headers,
                row=row.number,
            )
        )
        self.tally.rows += 1
        self.tally.dead_letter(reason)

    def _say(self, line: str) -> None:
        if self._progress is not None:
            self._progress(line)
        else:
            log.info("%s", line)


class _Progress:
    """A line every interval: position in the recording, rows/s, published, dead letters.

    While it waits for a row far ahead (a 16-minute step in real time), a line a minute
    says when the row is due, rather than the same line every interval.
    """

    _WAITING_INTERVAL_S = 60.0

    def __init__(self, replayer: Replayer, started: float) -> None:
        self._r = replayer
        self._last_at = started
        self._last_rows = 0

    def maybe(self, now: float, row: CsvRow, recorded: datetime, due: float) -> None:
        elapsed = now - self._last_at
        t = self._r.tally
        idle = t.rows == self._last_rows
        if elapsed < self._r._interval or (idle and elapsed < self._WAITING_INTERVAL_S):
            return
        rate = (t.rows - self._last_rows) / elapsed
        total = self._r.recording.rows
        share = f" ({100 * row.number / total:.0f} %)" if total else ""
        waiting = f", row {row.number:,} due in {_duration(due - now)}" if due > now else ""
        self._r._say(
            f"{self._r.domain.topic}: row {row.number:,} of {total:,}{share}, recorded "
            f"{format_time(recorded)}; published {t.published:,}, dead letters "
            f"{sum(t.dead.values()):,}; {rate:,.{1 if rate < 10 else 0}f} rows/s{waiting}"
        )
        self._last_at, self._last_rows = now, t.rows


def replay(
    settings: Settings,
    options: ReplayOptions,
    *,
    clock: Clock | None = None,
    progress: ProgressCallback | None = None,
    progress_interval_s: float = 5.0,
    producer_overrides: dict[str, str] | None = None,
    flush_timeout_s: float = 30.0,
) -> ReplaySummary:
    """Replay a recorded CSV into the domain's topic (see the module's docstring).

    Raises :class:`ReplayError` before sending anything when the options do not fit
    the file or the domain.
    """
    clock = clock or SystemClock()
    dom = domain(options.domain)
    recording = Recording.open(options.path)
    mapping = RowMapping.build(
        dom,
        recording.header,
        time_column=options.time_column,
        maps=options.maps,
        sets=options.sets,
        id_column=options.id_column,
        time_zone=options.time_zone,
    )
    replayer = Replayer(
        dom,
        recording,
        mapping,
        options,
        clock=clock,
        progress=progress,
        progress_interval_s=progress_interval_s,
    )
    counts = SendCounts()
    producer, deliveries, stop = counting_producer(
        producer_config(settings, producer_overrides), counts
    )

    def send(message: Outgoing) -> None:
        produce_when_room(
            producer,
            message.topic,
            message.value,
            message.key,
            headers=list(message.headers) or None,
        )
        counts.sent += 1

    started = clock.monotonic()
    with stop.on_signals():
        try:
            stopped_by = replayer.run(send, producer.poll, stop)
        except KeyboardInterrupt:  # outside the main thread, Ctrl-C arrives as this
            stopped_by = "interrupted"
    undelivered = flush_remaining(producer, flush_timeout_s, stop, counts)
    return replayer.summary(
        clock.monotonic() - started,
        "refused" if stop.refused else stopped_by,
        failed=counts.failed,
        undelivered=undelivered,
        first_error=stop.refused or deliveries.first_error,
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = round(seconds) // 60
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days} d"] if days else []
    if hours or days:
        parts.append(f"{hours} h")
    parts.append(f"{minutes} min")
    return " ".join(parts)
