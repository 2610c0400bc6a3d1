"""Device baselines: computed with polars by the Dagster asset from a real Delta lake,
published to the compacted topic on a real broker, and equal to an oracle computed in
plain SQL (DuckDB) over the same lake."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource

from orchestration.defs.features.assets import device_baselines
from orchestration.lib.settings import RiverbedResource
from riverbed import lake
from riverbed.contracts.iot import METRICS, DeviceBaseline, decode_baseline
from riverbed.kafka_admin import admin_client
from riverbed.settings import Settings, load_settings
from riverbed.topics import IOT_DEVICE_BASELINES, IOT_READINGS, PRODUCER_DEFAULTS
from tests.support.env import use_settings
from tests.support.flow_harness import read_topic
from tests.support.lake_fixture import OffsetAssigner, Row, SyntheticLake

pytestmark = pytest.mark.kafka

NEWEST = datetime(2026, 3, 31, 18, 0, tzinfo=UTC)
# What each kind of device measures: a climate sensor, a CO2 sensor, a light meter.
KINDS = (
    ("temperature_c", "humidity_pct"),
    ("co2_ppm", "temperature_c", "humidity_pct"),
    ("light_lux",),
)


def history(seed: int) -> list[Row]:
    """Devices of every kind over 20 days (the baselines' window is 14), with daily
    cycles, retries (the same reading again at a later offset, sometimes late by then),
    late readings and devices too thin for a baseline."""
    rng = random.Random(seed)
    rows: list[Row] = []
    for d in range(40):
        kind = KINDS[d % len(KINDS)]
        device, room = f"dev-{d:02d}", f"room-{d % 7}"
        # some devices send a handful of readings, most hundreds; none are all in the window
        for i in range(rng.choice([3, 25, 40, 120, 300])):
            at = NEWEST - timedelta(minutes=rng.randrange(20 * 24 * 60))
            if i == 0 and d == 0:
                at = NEWEST  # the lake's newest reading: where the window ends
            reading = {
                "reading_id": f"r-{d}-{i}",
                "device_id": device,
                "room_id": room,
                "event_time": at,
                "late": rng.random() < 0.05,
                **{metric: _value(rng, metric, at.hour) for metric in kind},
            }
            rows.append(reading)
            if rng.random() < 0.03:  # a retry, later, and judged late half the time
                rows.append({**reading, "late": rng.random() < 0.5})
    return rows


def _value(rng: random.Random, metric: str, hour: int) -> float | None:
    if rng.random() < 0.02:
        return None  # a reading that lacks one of its device's measurements
    day = 1.0 if 8 <= hour < 20 else 0.0
    centre = {"temperature_c": 19 + 3 * day, "humidity_pct": 45 - 5 * day}
    centre |= {"co2_ppm": 450 + 400 * day, "light_lux": 5 + 500 * day}
    return round(rng.gauss(centre[metric], centre[metric] * 0.05), 3)


ORACLE = """
with
records as (
    select * from {scan}
    qualify row_number() over (partition by reading_id order by _offset, _partition) = 1
),
window_ as (
    select *, hour(event_time at time zone 'UTC') as hour
    from records
    where not coalesce(late, false)
      and event_time > (select max(event_time) from {scan}) - interval {days} day
),
devices as (
    select device_id, arg_max(room_id, event_time) as room_id, count(*) as reading_count,
           max(event_time) as last_event_time
    from window_ group by device_id having count(*) >= {min_readings}
),
hours as (
    select device_id, hour,
        {stats}
    from window_ group by device_id, hour
)
select devices.*, hours.* exclude (device_id)
from devices join hours using (device_id)
order by device_id, hour
"""
STATS = ",\n        ".join(f"avg({m}), stddev_samp({m}), count({m})::bigint" for m in METRICS)


def oracle(settings: Settings) -> dict[str, tuple[str, int, datetime, dict[int, list]]]:
    """device -> (room, readings, last reading, hour -> [(mean, std, count) | None per metric])."""
    con = lake.connect_duckdb()
    try:
        con.execute("set TimeZone = 'UTC'")
        rows = con.sql(
            ORACLE.format(
                scan=lake.scan_sql(settings.lake_dir, "readings", "iot"),
                days=settings.baseline_window_days,
                min_readings=settings.baseline_min_readings,
                stats=STATS,
            )
        ).fetchall()
    finally:
        con.close()
    out: dict[str, tuple[str, int, datetime, dict[int, list]]] = {}
    for device, room, count, last, hour, *stats in rows:
        per_metric = [tuple(stats[i : i + 3]) for i in range(0, len(stats), 3)]
        _, _, _, hours = out.setdefault(device, (room, count, last, {}))
        hours[hour] = [s if s[2] else None for s in per_metric]
    return out


def test_baselines_are_published_to_a_compacted_topic_and_match_sql(
    kafka_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(
        **{**kafka_settings.model_dump(exclude_none=True), "home": tmp_path / "riverbed"}
    )
    use_settings(monkeypatch, settings)
    synthetic = SyntheticLake(settings.lake_dir, domain="iot")
    synthetic.offsets = OffsetAssigner(topic=IOT_READINGS, partitions=6, key="device_id")
    synthetic.commit("readings", synthetic.offsets.assign(history(seed=5)), rows_per_commit=700)

    result = dg.materialize([device_baselines], resources={"riverbed": RiverbedResource()})
    assert result.success
    (event,) = result.get_asset_materialization_events()
    published = event.materialization.metadata["baselines"].value

    expected = oracle(settings)
    assert 10 < len(expected) < 40  # some devices are too thin for a baseline
    assert published == len(expected)

    on_topic: dict[str, DeviceBaseline] = {}
    partition_of: dict[str, int] = {}
    for message in read_topic(settings, IOT_DEVICE_BASELINES):
        baseline = decode_baseline(message.value())
        assert message.key() == baseline.device_id.encode()
        on_topic[baseline.device_id] = baseline  # the latest per device, as compaction keeps
        partition_of[baseline.device_id] = message.partition()
    assert sorted(on_topic) == sorted(expected)
    for device, (room, count, last, hours) in expected.items():
        got = on_topic[device]
        assert (got.room_id, got.reading_count, got.window_days) == (room, count, 14), device
        assert datetime.fromisoformat(got.last_event_time) == last.astimezone(UTC), device
        assert [h.hour for h in got.hours] == sorted(hours), device
        for hour in got.hours:
            for metric, want in zip(METRICS, hours[hour.hour], strict=True):
                have = getattr(hour, metric)
                if want is None:
                    assert have is None, (device, hour.hour, metric)
                    continue
                mean, std, n = want
                assert have is not None, (device, hour.hour, metric)
                assert have.count == n, (device, hour.hour, metric)
                assert have.mean == pytest.approx(mean, rel=1e-9), (device, hour.hour, metric)
                if std is None:  # a single reading has no spread
                    assert have.std is None, (device, hour.hour, metric)
                else:
                    assert have.std == pytest.approx(std, rel=1e-9, abs=1e-12)

    # A device's baseline is in the partition number its readings are (KEY_PARTITIONER).
    assert partition_of == _reading_partitions(settings, list(partition_of))

    # The topic keeps the latest baseline per key.
    resource = ConfigResource("topic", IOT_DEVICE_BASELINES)
    admin = admin_client(settings)  # kept: the futures need their client alive
    (configs,) = admin.describe_configs([resource]).values()
    assert configs.result(30)["cleanup.policy"].value == "compact"


def _reading_partitions(settings: Settings, devices: list[str]) -> dict[str, int]:
    """The partition of iot.readings a producer with Riverbed's settings puts each
    device's readings in."""
    partitions: dict[str, int] = {}
    producer = Producer({**settings.kafka_client_config(), **PRODUCER_DEFAULTS})

    def delivered(err: object, msg: object) -> None:
        assert err is None, err
        partitions[msg.key().decode()] = msg.partition()  # type: ignore[attr-defined]

    for device in devices:
        producer.produce(IOT_READINGS, key=device.encode(), value=b"{}", on_delivery=delivered)
    assert producer.flush(30) == 0
    return partitions
