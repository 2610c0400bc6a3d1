"""Device baselines that flow back into the stream: each device's usual readings per
hour of day, computed with polars from the lake.

:func:`device_baselines` reads the lake's ``iot/readings`` Delta table and computes,
per device and UTC hour of day, per measurement, the mean, the sample standard
deviation (None below two values) and the count of the device's readings in the
``RIVERBED_BASELINE_WINDOW_DAYS`` that end at the lake's newest reading (event time,
as the card profiles: a replayed history gives the same baselines). Only on-time
readings count: a late one (``late``: it came after its window closed) is kept in
the lake but is exactly the kind of reading a baseline should not learn from
unchecked. A reading the lake holds twice (a device's retry the flow let through, a
replay) counts once: its earliest record. Devices with fewer than
``RIVERBED_BASELINE_MIN_READINGS`` readings get no baseline.

:func:`publish_device_baselines` publishes them as
:class:`~riverbed.contracts.iot.DeviceBaseline` to the compacted
``iot.device_baselines`` topic, keyed by device_id and partitioned like
``iot.readings``, so a flow partition finds the baselines of its own devices in the
same-numbered partition. Reading, windowing and publishing are the card profiles' own
(:mod:`riverbed.features`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl

from riverbed.contracts.iot import METRICS, DeviceBaseline, HourBaseline, MetricBaseline, encode
from riverbed.contracts.wire import rfc3339_instant
from riverbed.features import Published, in_window, publish_keyed, scan_dataset
from riverbed.settings import Settings
from riverbed.topics import IOT_DEVICE_BASELINES

DOMAIN = "iot"

METRIC_STATS = pl.Struct({"mean": pl.Float64, "std": pl.Float64, "count": pl.Int64})
HOUR_SCHEMA = pl.Struct({"hour": pl.Int64, **{metric: METRIC_STATS for metric in METRICS}})
BASELINE_SCHEMA = {
    "device_id": pl.String,
    "room_id": pl.String,
    "reading_count": pl.Int64,
    "last_event_time": pl.Datetime("us", "UTC"),
    "hours": pl.List(HOUR_SCHEMA),
}


def device_baselines(settings: Settings) -> pl.DataFrame:
    """One row per device with a baseline (columns of :data:`BASELINE_SCHEMA`), by device_id."""
    readings = scan_dataset(settings, "readings", DOMAIN)
    if readings is None:
        return pl.DataFrame(schema=BASELINE_SCHEMA)
    return baselines_from(readings, settings.baseline_window_days, settings.baseline_min_readings)


def baselines_from(readings: pl.LazyFrame, window_days: int, min_readings: int) -> pl.DataFrame:
    """The baselines of ``readings`` (the lake's columns: at least reading_id, device_id,
    room_id, event_time, the measurements, late, _partition, _offset) over the
    ``window_days`` up to their newest event time."""
    readings = readings.select(
        "reading_id",
        "device_id",
        "room_id",
        pl.col("event_time").dt.replace_time_zone("UTC"),
        *(pl.col(metric).cast(pl.Float64) for metric in METRICS),
        pl.col("late").fill_null(False),
        "_partition",
        "_offset",
    )
    window = (
        in_window(readings, window_days)
        # a reading held twice counts once, as its earliest record (as dbt's staging does)
        .sort("_offset", "_partition")
        .unique(subset="reading_id", keep="first", maintain_order=False)
        .filter(~pl.col("late"))
        .with_columns(pl.col("event_time").dt.hour().cast(pl.Int64).alias("hour"))
    )
    per_device = (
        window.group_by("device_id")
        .agg(
            pl.len().cast(pl.Int64).alias("reading_count"),
            pl.col("event_time").max().alias("last_event_time"),
            # a device moved to another room is baselined for the room it is in now
            pl.col("room_id").sort_by("event_time", "room_id").last(),
        )
        .filter(pl.col("reading_count") >= min_readings)
    )
    per_hour = (
        window.group_by("device_id", "hour")
        .agg(*(_metric_stats(metric) for metric in METRICS))
        .group_by("device_id")
        .agg(pl.struct("hour", *METRICS).sort_by("hour").alias("hours"))
    )
    return (
        per_device.join(per_hour, on="device_id")
        .select(list(BASELINE_SCHEMA))
        .sort("device_id")
        .collect()
        .cast(BASELINE_SCHEMA)  # type: ignore[arg-type]
    )


def _metric_stats(metric: str) -> pl.Expr:
    """Mean, sample std and count of one measurement's values in a group; null when the
    group has none (the device does not measure it, or not in that hour)."""
    values = pl.col(metric)
    count = values.count().cast(pl.Int64)
    stats = pl.struct(
        values.mean().alias("mean"),
        values.std(ddof=1).alias("std"),
        count.alias("count"),
    )
    return pl.when(count > 0).then(stats).otherwise(None).alias(metric)


def publish_device_baselines(
    settings: Settings, baselines: pl.DataFrame, topic: str = IOT_DEVICE_BASELINES
) -> Published:
    """Publish every baseline, keyed by device_id; raises if any is not acknowledged."""
    now = rfc3339_instant(datetime.now(UTC))
    messages = (
        (row["device_id"], encode(to_contract(row, now, settings.baseline_window_days)))
        for row in baselines.iter_rows(named=True)
    )
    return publish_keyed(settings, topic, messages, what="device baselines")


def to_contract(row: dict[str, Any], computed_at: str, window_days: int) -> DeviceBaseline:
    """A row of :func:`device_baselines` as the wire format of ``iot.device_baselines``."""
    return DeviceBaseline(
        device_id=row["device_id"],
        room_id=row["room_id"],
        hours=[
            HourBaseline(hour=hour["hour"], **{m: _metric(hour[m]) for m in METRICS})
            for hour in row["hours"]
        ],
        reading_count=row["reading_count"],
        last_event_time=rfc3339_instant(row["last_event_time"]),
        computed_at=computed_at,
        window_days=window_days,
    )


def _metric(stats: dict[str, Any] | None) -> MetricBaseline | None:
    return None if stats is None else MetricBaseline(stats["mean"], stats["std"], stats["count"])
