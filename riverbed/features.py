"""Batch features that flow back into the stream: card profiles, computed with polars.

:func:`card_profiles` reads the lake's ``transactions`` Delta table (polars' own Delta
reader, over delta-rs) and computes one :class:`~riverbed.contracts.payments.CardProfile`
per card with at least ``RIVERBED_PROFILE_MIN_TXNS`` transactions in the
``RIVERBED_PROFILE_WINDOW_DAYS`` that end at the lake's newest event time (event
time, not the wall clock: a replayed history gives the same profiles).
:func:`publish_card_profiles` publishes them to the compacted
``payments.card_profiles`` topic, keyed by card, so the topic holds the latest
profile of every card and a flow can read it as a table.

Publishing is at least once (an idempotent producer, acks from every in-sync
replica): a profile published twice is the same profile, and compaction keeps the
latest per card.

What every batch feature does the same way lives here too, so the IoT device
baselines (:mod:`riverbed.baselines`) read, window and publish exactly as the card
profiles do: :func:`scan_dataset` (a lake table as a polars frame),
:func:`in_window` (the days up to the newest event), :func:`publish_keyed`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
from confluent_kafka import KafkaError, Producer

from riverbed import lake
from riverbed.contracts.payments import CardProfile, encode
from riverbed.contracts.wire import rfc3339_instant
from riverbed.logs import KAFKA_CLIENT_LOG
from riverbed.settings import Settings
from riverbed.topics import PAYMENTS_CARD_PROFILES, PRODUCER_DEFAULTS

log = logging.getLogger("riverbed.features")

USUAL_HOUR_SHARE = 0.1  # an hour of day is usual with at least this share of a card's txns
USUAL_MCCS = 3

PROFILE_SCHEMA = {
    "card_id": pl.String,
    "txn_count": pl.Int64,
    "home_country": pl.String,
    "amount_mean": pl.Float64,
    "amount_std": pl.Float64,
    "usual_hours": pl.List(pl.Int64),
    "usual_mccs": pl.List(pl.String),
    "last_event_time": pl.Datetime("us", "UTC"),
}


def card_profiles(settings: Settings) -> pl.DataFrame:
    """One row per profiled card (columns of :data:`PROFILE_SCHEMA`), by card_id."""
    txns = scan_dataset(settings, "transactions")
    if txns is None:
        return pl.DataFrame(schema=PROFILE_SCHEMA)
    return profiles_from(txns, settings.profile_window_days, settings.profile_min_txns)


def scan_dataset(
    settings: Settings, dataset: str, domain: str = lake.DEFAULT_DOMAIN
) -> pl.LazyFrame | None:
    """A lake table's current snapshot as a lazy polars frame (polars' own Delta reader);
    None before the table's first commit."""
    if not lake.table_exists(settings.lake_dir, dataset, domain):
        return None
    return pl.scan_delta(str(lake.dataset_dir(settings.lake_dir, dataset, domain)))


def in_window(
    frame: pl.LazyFrame, window_days: int, time_column: str = "event_time"
) -> pl.LazyFrame:
    """The rows of ``frame`` in the ``window_days`` that end at its newest ``time_column``
    (event time, not the wall clock: a replayed history gives the same features).

    The newest is read first (one aggregate over the frame), then the bound applied as a
    literal. No rows at all: an empty frame.
    """
    newest = frame.select(pl.col(time_column).max()).collect().item()
    if newest is None:
        return frame.head(0)
    return frame.filter(pl.col(time_column) > newest - pl.duration(days=window_days))


def profiles_from(txns: pl.LazyFrame, window_days: int, min_txns: int) -> pl.DataFrame:
    """The profiles of the transactions ``txns`` (at least card_id, country, mcc, amount,
    event_time), over the ``window_days`` up to their newest event time."""
    txns = txns.select(
        "card_id",
        "country",
        "mcc",
        pl.col("amount").cast(pl.Float64),
        pl.col("event_time").dt.replace_time_zone("UTC"),
    )
    window = in_window(txns, window_days)
    per_card = (
        window.group_by("card_id")
        .agg(
            pl.len().cast(pl.Int64).alias("txn_count"),
            pl.col("amount").mean().alias("amount_mean"),
            pl.col("amount").std(ddof=1).alias("amount_std"),
            pl.col("event_time").max().alias("last_event_time"),
        )
        .filter(pl.col("txn_count") >= min_txns)
    )
    home = (
        _ranked(window, "country")
        .filter(pl.col("rank") == 1)
        .select("card_id", pl.col("country").alias("home_country"))
    )
    mccs = (
        _ranked(window, "mcc")
        .filter(pl.col("rank") <= USUAL_MCCS)
        .group_by("card_id")
        .agg(pl.col("mcc").sort_by("rank").alias("usual_mccs"))
    )
    hours = (
        window.with_columns(pl.col("event_time").dt.hour().cast(pl.Int64).alias("hour"))
        .group_by("card_id", "hour")
        .agg(pl.len().alias("n"))
        .with_columns((pl.col("n") / pl.col("n").sum().over("card_id")).alias("share"))
        .filter(pl.col("share") >= USUAL_HOUR_SHARE)
        .group_by("card_id")
        .agg(pl.col("hour").sort().alias("usual_hours"))
    )
    return (
        per_card.join(home, on="card_id")
        .join(mccs, on="card_id")
        .join(hours, on="card_id", how="left")
        .with_columns(pl.col("usual_hours").fill_null(pl.lit([], pl.List(pl.Int64))))
        .select(list(PROFILE_SCHEMA))
        .sort("card_id")
        .collect()
    )


def _ranked(window: pl.LazyFrame, column: str) -> pl.LazyFrame:
    """Per card, each value of ``column`` ranked by how often the card used it (1: most;
    ties go to the lowest value)."""
    return (
        window.group_by("card_id", column)
        .agg(pl.len().alias("n"))
        .sort(["card_id", "n", column], descending=[False, True, False])
        .with_columns(pl.int_range(1, pl.len() + 1).over("card_id").alias("rank"))
    )


@dataclass(frozen=True)
class Published:
    records: int
    topic: str

    @property
    def profiles(self) -> int:
        """The card profiles published (what :func:`publish_card_profiles` counts)."""
        return self.records


def publish_card_profiles(
    settings: Settings, profiles: pl.DataFrame, topic: str = PAYMENTS_CARD_PROFILES
) -> Published:
    """Publish every profile, keyed by card_id; raises if any is not acknowledged."""
    now = rfc3339_instant(datetime.now(UTC))
    messages = (
        (
            row["card_id"],
            encode(
                CardProfile(
                    card_id=row["card_id"],
                    txn_count=row["txn_count"],
                    home_country=row["home_country"],
                    amount_mean=row["amount_mean"],
                    amount_std=row["amount_std"],
                    usual_hours=row["usual_hours"],
                    usual_mccs=row["usual_mccs"],
                    last_event_time=rfc3339_instant(row["last_event_time"]),
                    computed_at=now,
                    window_days=settings.profile_window_days,
                )
            ),
        )
        for row in profiles.iter_rows(named=True)
    )
    return publish_keyed(settings, topic, messages, what="card profiles")


def features_producer(settings: Settings) -> Producer:
    """Riverbed's producer settings, its partitioner too: a keyed feature lands in the
    partition number of its key's events (a card's transactions, a device's readings).
    librdkafka's lines (a broker down) come out as Riverbed's log lines, in the poll and
    flush the publisher makes anyway."""
    return Producer(
        {**settings.kafka_client_config(), **PRODUCER_DEFAULTS, "logger": KAFKA_CLIENT_LOG}
    )


def publish_keyed(
    settings: Settings, topic: str, messages: Iterable[tuple[str, bytes]], *, what: str
) -> Published:
    """Publish ``(key, value)`` messages to ``topic``; raises, naming ``what`` was being
    published, if any is not acknowledged within 60 s."""
    producer = features_producer(settings)
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(err)

    sent = 0
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=value, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
        sent += 1
    left = producer.flush(60)
    if failures or left:
        first = failures[0].str() if failures else "not acknowledged within 60 s"
        raise RuntimeError(
            f"{len(failures) + left} of {sent} {what} were not published "
            f"to {topic}: {first}. Check the cluster (`riverbed kafka "
            "status`) and that the topic exists (`riverbed topics apply`)."
        )
    return Published(sent, topic)
