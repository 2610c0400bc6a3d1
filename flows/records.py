"""The items that travel between the payments flow's steps.

Plain slotted dataclasses: cheap to build, and picklable, because Bytewax
pickles items that cross worker processes and state that it snapshots.
Event times are integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# (offset, key, value, timestamp_ms); timestamp_ms is -1 when Kafka has none.
RawRecord = tuple[int, bytes | None, bytes | None, int]


@dataclass(slots=True)
class SourceBatch:
    """What the source emits for one Kafka partition: a micro-batch, or a tick (no records).

    ``next_offset`` is the partition position after the batch; ``caught_up`` says the
    position reached the high watermark; ``idle`` that it is caught up and has had no
    message for a while (wall time), so downstream may stop waiting for it.
    """

    partition: int
    records: list[RawRecord]
    next_offset: int
    caught_up: bool = False
    idle: bool = False
    # Records of the co-partitioned table topic (card profiles) read since the last
    # batch; the processor applies each from its Kafka timestamp on.
    table: list[RawRecord] | None = None


@dataclass(slots=True)
class DlqRecord:
    offset: int
    key: bytes | None
    value: bytes | None
    error: str


@dataclass(slots=True)
class AlertRecord:
    alert_id: str
    rule: str
    card_id: str
    transaction_id: str
    event_us: int
    detected_us: int
    score: float
    details: str
    offset: int  # of the triggering transaction
    payload: bytes  # the Alert as JSON, as published on payments.alerts
    produced_ms: int = -1  # the triggering message's Kafka timestamp (metrics only)


@dataclass(slots=True)
class TxnColumns:
    """Valid, first-seen transactions of one batch, column by column (cheap to Arrow)."""

    transaction_id: list[str] = field(default_factory=list)
    card_id: list[str] = field(default_factory=list)
    merchant_id: list[str] = field(default_factory=list)
    mcc: list[str] = field(default_factory=list)
    amount_cents: list[int] = field(default_factory=list)
    currency: list[str] = field(default_factory=list)
    country: list[str] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)
    lon: list[float] = field(default_factory=list)
    channel: list[str] = field(default_factory=list)
    event_us: list[int] = field(default_factory=list)
    late: list[bool] = field(default_factory=list)
    offset: list[int] = field(default_factory=list)
    # The message's Kafka timestamp (the producer's clock), for the latency metrics;
    # not a lake column.
    produced_ms: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offset)

    def columns(self) -> tuple[list, ...]:
        return (
            self.transaction_id,
            self.card_id,
            self.merchant_id,
            self.mcc,
            self.amount_cents,
            self.currency,
            self.country,
            self.lat,
            self.lon,
            self.channel,
            self.event_us,
            self.late,
            self.offset,
            self.produced_ms,
        )

    def take(self, keep: list[int]) -> TxnColumns:
        """The rows at the given indices, in order."""
        out = TxnColumns()
        for src, dst in zip(self.columns(), out.columns(), strict=True):
            dst.extend(src[i] for i in keep)
        return out

    def extend(self, other: TxnColumns) -> None:
        for dst, src in zip(self.columns(), other.columns(), strict=True):
            dst.extend(src)


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
class WindowDelta:
    """A partition's change to one (merchant, window) since it last reported it.

    ``count``, ``sum_cents``, ``distinct_cards`` and ``alerts`` are increments;
    ``min_cents``/``max_cents`` are the partition's values so far (they only move
    one way, so the merger can fold them with min/max).
    """

    merchant_id: str
    window_start_us: int
    count: int
    sum_cents: int
    min_cents: int
    max_cents: int
    distinct_cards: int
    alerts: int


@dataclass(slots=True)
class MergerInput:
    """A partition's window news: deltas, its watermark, and whether it is idle."""

    partition: int
    deltas: list[WindowDelta]
    watermark_us: int | None
    idle: bool


@dataclass(slots=True)
class ProcessedBatch:
    """Everything one source batch produced, for the partition's sink."""

    partition: int
    next_offset: int
    txns: TxnColumns
    alerts: list[AlertRecord]
    dlq: list[DlqRecord]
    counts: Counts
    caught_up: bool = False


@dataclass(slots=True)
class ProcessorOutput:
    batch: ProcessedBatch
    merger: MergerInput | None


@dataclass(slots=True)
class MerchantMinuteRow:
    merchant_id: str
    window_start_us: int
    window_end_us: int
    txn_count: int
    sum_cents: int
    min_cents: int
    max_cents: int
    distinct_cards: int
    alert_count: int

    @property
    def key(self) -> tuple[str, int]:
        return (self.merchant_id, self.window_start_us)

    @property
    def mean(self) -> float:
        return self.sum_cents / self.txn_count / 100 if self.txn_count else 0.0
