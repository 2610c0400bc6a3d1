"""The items that travel between the payments flow's steps (the kit's are in
:mod:`flows.kit.records`).

Event times are integer microseconds since the epoch (UTC); money is integer cents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from flows.kit.records import ProcessedBatch
from riverbed import lake


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

    @property
    def key(self) -> bytes:
        return self.card_id.encode()


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

    def to_arrow(self, topic: str, partition: int) -> pa.Table:
        n = len(self)
        return pa.Table.from_arrays(
            [
                pa.array(self.transaction_id, pa.string()),
                pa.array(self.card_id, pa.string()),
                pa.array(self.merchant_id, pa.string()),
                pa.array(self.mcc, pa.string()),
                lake.money_from_cents(self.amount_cents),
                pa.array(self.currency, pa.string()),
                pa.array(self.country, pa.string()),
                pa.array(self.lat, pa.float64()),
                pa.array(self.lon, pa.float64()),
                pa.array(self.channel, pa.string()),
                lake.utc_micros(self.event_us),
                pa.array(self.late, pa.bool_()),
                pa.repeat(pa.scalar(topic, pa.string()), n),
                pa.repeat(pa.scalar(partition, pa.int32()), n),
                pa.array(self.offset, pa.int64()),
            ],
            schema=lake.TRANSACTIONS_SCHEMA,
        )


def alerts_table(alerts: list[AlertRecord], topic: str, partition: int) -> pa.Table:
    """Alerts as rows of the lake's ``alerts`` dataset."""
    n = len(alerts)
    return pa.Table.from_arrays(
        [
            pa.array([a.alert_id for a in alerts], pa.string()),
            pa.array([a.rule for a in alerts], pa.string()),
            pa.array([a.card_id for a in alerts], pa.string()),
            pa.array([a.transaction_id for a in alerts], pa.string()),
            lake.utc_micros([a.event_us for a in alerts]),
            lake.utc_micros([a.detected_us for a in alerts]),
            pa.array([a.score for a in alerts], pa.float64()),
            pa.array([a.details for a in alerts], pa.string()),
            pa.repeat(pa.scalar(topic, pa.string()), n),
            pa.repeat(pa.scalar(partition, pa.int32()), n),
            pa.array([a.offset for a in alerts], pa.int64()),
        ],
        schema=lake.ALERTS_SCHEMA,
    )


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


def merchant_minute_table(rows: list[MerchantMinuteRow]) -> pa.Table:
    return pa.Table.from_arrays(
        [
            pa.array([r.merchant_id for r in rows], pa.string()),
            lake.utc_micros([r.window_start_us for r in rows]),
            lake.utc_micros([r.window_end_us for r in rows]),
            pa.array([r.txn_count for r in rows], pa.int64()),
            lake.money_from_cents([r.sum_cents for r in rows]),
            lake.money_from_cents([r.min_cents for r in rows]),
            lake.money_from_cents([r.max_cents for r in rows]),
            pa.array([r.mean for r in rows], pa.float64()),
            pa.array([r.distinct_cards for r in rows], pa.int64()),
            pa.array([r.alert_count for r in rows], pa.int64()),
        ],
        schema=lake.MERCHANT_MINUTE_SCHEMA,
    )
