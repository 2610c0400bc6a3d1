"""The items that travel between a flow's steps, whatever its domain.

Plain slotted dataclasses: cheap to build, and picklable, because Bytewax
pickles items that cross worker processes and state that it snapshots.
Event times are integer microseconds since the epoch (UTC).

A domain's processor turns a :class:`SourceBatch` into a :class:`ProcessedBatch`:
its valid, first-seen events as :class:`Rows` (the domain's columns, for its events
dataset in the lake), its alerts as :class:`Alert` records (published to its alerts
topic and kept in its alerts dataset), and its invalid messages as
:class:`DlqRecord`. The kit's sinks need nothing else from the domain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Self

import pyarrow as pa

# (offset, key, value, timestamp_ms); timestamp_ms is -1 when Kafka has none.
RawRecord = tuple[int, bytes | None, bytes | None, int]


@dataclass(slots=True)
class SourceBatch:
    """What the source emits for one Kafka partition: a micro-batch, or a tick (no records).

    ``next_offset`` is the partition position after the batch; ``caught_up`` says the
    position reached the high watermark; ``idle`` that it is caught up and has had no
    message for a while (wall time), so downstream may stop waiting for it;
    ``backlog`` that the read filled the batch (more was waiting: the partition is
    working through a backlog, not following live traffic).
    """

    partition: int
    records: list[RawRecord]
    next_offset: int
    caught_up: bool = False
    idle: bool = False
    # Records of the co-partitioned table topic (a stream-table join's table side)
    # read since the last batch; the processor applies each from its Kafka timestamp on.
    table: list[RawRecord] | None = None
    backlog: bool = False


@dataclass(slots=True)
class DlqRecord:
    offset: int
    key: bytes | None
    value: bytes | None
    error: str


class Rows(Protocol):
    """A domain's valid, first-seen events of one batch, column by column.

    ``offset``, ``event_us`` and ``produced_ms`` (the message's Kafka timestamp, for the
    latency metrics; not a lake column) are lists as long as the rows.
    """

    offset: list[int]
    event_us: list[int]
    produced_ms: list[int]

    def __len__(self) -> int: ...
    def take(self, keep: list[int]) -> Self: ...
    def to_arrow(self, topic: str, partition: int) -> pa.Table: ...


class Alert(Protocol):
    """An alert a processor raised: published to the alerts topic, kept in the lake."""

    alert_id: str
    rule: str
    event_us: int
    offset: int  # of the triggering event
    payload: bytes  # as published
    produced_ms: int  # the triggering message's Kafka timestamp (metrics only)

    @property
    def key(self) -> bytes: ...


@dataclass(slots=True)
class Counts:
    """What one batch did, for the status file."""

    processed: int = 0
    valid: int = 0
    invalid: int = 0
    late: int = 0
    resent: int = 0
    alerts: dict[str, int] = field(default_factory=dict)

    def add(self, other: Counts) -> None:
        self.processed += other.processed
        self.valid += other.valid
        self.invalid += other.invalid
        self.late += other.late
        self.resent += other.resent
        for rule, n in other.alerts.items():
            self.alerts[rule] = self.alerts.get(rule, 0) + n


@dataclass(slots=True)
class ProcessedBatch:
    """Everything one source batch produced, for the partition's sink."""

    partition: int
    next_offset: int
    rows: Rows
    alerts: list[Alert]
    dlq: list[DlqRecord]
    counts: Counts
    caught_up: bool = False
    backlog: bool = False  # the source batch's (SourceBatch.backlog)
