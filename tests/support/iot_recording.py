"""A recorded day in two rooms, with planted faults, and the oracles the IoT flow's tests
compare with: computed here from the raw messages with polars or plain Python, never
with the flow's own classes.

Two rooms of three devices (climate: temperature and humidity; light; air: CO2),
40 minutes at one reading per 10 s each; the rooms are occupied from minute 10 to 30.
Planted: a reading out of the plausible range (``r1-climate-77``), a stuck humidity
sensor (``r2-climate`` 50-61, twelve equal readings), a dropout of five minutes
(``r1-light`` 100-129 missing), readings of ``r2-air`` published 75 s late, resends
and invalid messages.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import polars as pl

US = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PER_DEVICE = 240
DEVICES = 6
DROPPED = 30
FLATLINE = 12


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def recording(t0: datetime) -> tuple[list[tuple[bytes, bytes]], dict[str, object]]:
    """Two rooms of three devices, 40 minutes at one reading per 10 s each, with known
    faults; (key, value) in publishing order, and what was planted."""
    rng = random.Random(7)
    out: list[tuple[datetime, int, bytes, bytes]] = []
    planted: dict[str, object] = {"resends": 0, "invalid": 0}
    seq = 0
    for room in ("r1", "r2"):
        for kind in ("climate", "light", "air"):
            device = f"{room}-{kind}"
            for i in range(PER_DEVICE):
                t = t0 + timedelta(seconds=10 * i + rng.uniform(0, 3))
                if device == "r1-light" and 100 <= i < 130:
                    continue  # a dropout of five minutes
                body: dict[str, object] = {
                    "reading_id": f"{device}-{i}",
                    "device_id": device,
                    "room_id": room,
                    "event_time": _iso(t),
                }
                occupied = 60 <= i < 180
                if kind == "climate":
                    body["temperature_c"] = round(21 + rng.gauss(0, 0.3), 2)
                    body["humidity_pct"] = round(40 + (5 if occupied else 0) + rng.gauss(0, 1), 2)
                    if device == "r2-climate" and 50 <= i < 62:
                        body["humidity_pct"] = 44.0  # a stuck sensor: 12 in a row
                    if device == "r1-climate" and i == 77:
                        body["temperature_c"] = 61.5  # out of the plausible range
                elif kind == "light":
                    body["light_lux"] = round(
                        max(0.0, (450 if occupied else 20) + rng.gauss(0, 15)), 1
                    )
                else:
                    body["co2_ppm"] = round((900 if occupied else 430) + rng.gauss(0, 20), 1)
                publish = t
                if device == "r2-air" and i % 37 == 5:
                    publish = t + timedelta(seconds=75)  # arrives late, out of order
                seq += 1
                value = json.dumps(body).encode()
                out.append((publish, seq, device.encode(), value))
                if i % 53 == 11:
                    seq += 1
                    out.append((publish + timedelta(seconds=1), seq, device.encode(), value))
                    planted["resends"] = int(planted["resends"]) + 1  # type: ignore[call-overload]
                if i % 61 == 3:
                    seq += 1
                    bad = dict(body, humidity_pct=140) if kind == "climate" else {"x": 1}
                    out.append((publish, seq, device.encode(), json.dumps(bad).encode()))
                    planted["invalid"] = int(planted["invalid"]) + 1  # type: ignore[call-overload]
    out.sort(key=lambda x: (x[0], x[1]))
    return [(k, v) for _t, _s, k, v in out], planted


def oracle_readings(parts: dict) -> pl.DataFrame:
    """Valid, first-seen readings with their lateness (30 s behind the partition's newest),
    from the raw partitions: {partition: [(offset, key, value, ...), ...]}."""
    rows = []
    for p, recs in sorted(parts.items()):
        seen: set[str] = set()
        newest = None
        for offset, _key, value, _ts in recs:
            body = json.loads(value)
            if "reading_id" not in body or body.get("humidity_pct", 50) > 100:
                continue
            if body["reading_id"] in seen:
                continue
            seen.add(body["reading_id"])
            t = datetime.fromisoformat(body["event_time"].replace("Z", "+00:00"))
            us = (t - EPOCH) // timedelta(microseconds=1)
            late = newest is not None and us < newest - 30 * US
            newest = us if newest is None else max(newest, us)
            rows.append(
                {
                    "reading_id": body["reading_id"],
                    "device_id": body["device_id"],
                    "room_id": body["room_id"],
                    "t": us,
                    "temperature_c": body.get("temperature_c"),
                    "humidity_pct": body.get("humidity_pct"),
                    "light_lux": body.get("light_lux"),
                    "co2_ppm": body.get("co2_ppm"),
                    "late": late,
                    "partition": p,
                    "offset": offset,
                }
            )
    return pl.DataFrame(rows, infer_schema_length=None)


def oracle_windows(readings: pl.DataFrame) -> set[tuple]:
    """5-minute windows every minute per device, over on-time readings (polars)."""
    on_time = readings.filter(~pl.col("late"))
    starts = on_time.with_columns(
        last=pl.col("t") - pl.col("t") % (60 * US),
    ).with_columns(start=pl.int_ranges(pl.col("last") - 4 * 60 * US, pl.col("last") + 1, 60 * US))
    exploded = starts.explode("start")
    agg = exploded.group_by("device_id", "start").agg(
        n=pl.len(),
        co2=pl.col("co2_ppm").count(),
        co2_max=pl.col("co2_ppm").max(),
        light_mean=pl.col("light_lux").mean(),
    )
    return {
        (
            r["device_id"],
            r["start"],
            r["n"],
            r["co2"],
            r["co2_max"],
            None if r["light_mean"] is None else round(r["light_mean"], 6),
        )
        for r in agg.iter_rows(named=True)
    }


def oracle_rooms(readings: pl.DataFrame) -> dict[tuple[str, str], tuple]:
    """Per CO2 reading: the room's nearest light and humidity within 30 s (polars)."""
    on_time = readings.filter(~pl.col("late"))
    anchors = on_time.filter(pl.col("co2_ppm").is_not_null()).select(
        "room_id", "reading_id", "t", "co2_ppm"
    )
    out = {}
    for side in ("light_lux", "humidity_pct"):
        cands = on_time.filter(pl.col(side).is_not_null()).select(
            "room_id", pl.col("reading_id").alias("cid"), pl.col("t").alias("ct"), side
        )
        joined = (
            anchors.join(cands, on="room_id")
            .filter((pl.col("ct") - pl.col("t")).abs() <= 30 * US)
            .with_columns(d=(pl.col("ct") - pl.col("t")).abs())
            .sort("d", "ct", "cid")
            .group_by("room_id", "reading_id", maintain_order=True)
            .first()
        )
        for r in joined.iter_rows(named=True):
            out.setdefault((r["room_id"], r["reading_id"]), {})[side] = r[side]
    result = {}
    for r in anchors.iter_rows(named=True):
        found = out.get((r["room_id"], r["reading_id"]), {})
        light = found.get("light_lux")
        occupied = None if light is None else (light >= 250 and r["co2_ppm"] >= 600)
        result[(r["room_id"], r["reading_id"])] = (light, found.get("humidity_pct"), occupied)
    return result
