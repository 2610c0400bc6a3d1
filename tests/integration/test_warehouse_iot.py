"""The IoT warehouse over a synthetic lake: real dbt, real DuckDB, no Kafka.

A warehouse is built before the IoT flow ever wrote (no IoT table at all: the build
must pass and the marts be empty). Then a known input (readings of climate, CO2 and
light sensors with retries, late readings and devices going silent for hours; the
anomalies, hopping windows and room states the flow would write beside them) is
written to the Delta lake the way the flow writes it (riverbed.lake.TableWriter:
offsets recorded per commit, windows upserted), and every IoT mart must equal an
oracle computed here in Python from the rows written. A second micro-batch (a new
day, late readings and retries into the first day) must leave the marts equal to the
oracle over everything, recomputing only the changed dates and loading only the new
anomalies. Compaction must change nothing.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import fmean
from typing import Any

import pytest

from riverbed import lake as lake_tables
from riverbed.contracts.iot import METRICS
from riverbed.topics import IOT_READINGS
from tests.support.lake_fixture import DbtRun, OffsetAssigner, Row, SyntheticLake

DAY0 = datetime(2026, 11, 20, tzinfo=UTC)
KINDS = (
    ("temperature_c", "humidity_pct"),
    ("co2_ppm", "temperature_c"),
    ("light_lux",),
)
DEVICES = [(f"dev-{d:02d}", f"room-{d % 4}", KINDS[d % len(KINDS)]) for d in range(9)]
RULES = ("range", "baseline", "flatline", "dropout")
WINDOW = timedelta(minutes=10)
HOP = timedelta(minutes=5)
WINDOWS_APP_ID = f"{IOT_READINGS}/windows"

Key = tuple[Any, ...]


# --------------------------------------------------------------------------------------
# input
# --------------------------------------------------------------------------------------


def make_readings(
    rng: random.Random, start: datetime, hours: int, tag: str, late: bool = False
) -> list[Row]:
    """Every device's readings over ``hours`` from ``start``: one every 0.5 to 4 minutes,
    with now and then a silent stretch of hours (a dropout)."""
    rows = []
    for device, room, kind in DEVICES:
        at = start + timedelta(seconds=rng.randrange(240))
        n = 0
        while at < start + timedelta(hours=hours):
            rows.append(
                {
                    "reading_id": f"r-{tag}-{device}-{n}",
                    "device_id": device,
                    "room_id": room,
                    "event_time": at,
                    "late": late or rng.random() < 0.02,
                    # a reading may lack one of its device's measurements, never all
                    **{
                        m: round(rng.uniform(1, 900), 3)
                        for i, m in enumerate(kind)
                        if i == 0 or rng.random() > 0.1
                    },
                }
            )
            n += 1
            gap = rng.randrange(30, 240) if rng.random() > 0.004 else rng.randrange(7_200, 14_400)
            at += timedelta(seconds=gap)
    return sorted(rows, key=lambda r: r["event_time"])


def make_anomalies(rng: random.Random, records: Sequence[Row]) -> list[Row]:
    """Anomalies on about 2% of the records, some found twice (a replay)."""
    out = []
    for r in records:
        if rng.random() >= 0.02:
            continue
        rule = rng.choice(RULES)
        # a dropout is a gap, not a value: it has no measurement of its own
        metric = None if rule == "dropout" else next(m for m in METRICS if r.get(m) is not None)
        anomaly = {
            "anomaly_id": f"an-{rule}-{r['reading_id']}-{metric}",
            "rule": rule,
            "device_id": r["device_id"],
            "room_id": r["room_id"],
            "reading_id": r["reading_id"],
            "metric": metric,
            "value": r.get(metric) if metric else None,
            "event_time": r["event_time"],
            "detected_at": r["event_time"] + timedelta(seconds=2),
            "score": round(rng.random(), 3),
            "details": "{}",
            "_topic": r["_topic"],
            "_partition": r["_partition"],
            "_offset": r["_offset"],
        }
        out.append(anomaly)
        if rng.random() < 0.1:
            out.append({**anomaly, "detected_at": anomaly["detected_at"] + timedelta(seconds=9)})
    return sorted(out, key=lambda a: (a["_partition"], a["_offset"]))


def make_room_states(rng: random.Random, records: Sequence[Row]) -> list[Row]:
    """One row per record that carries CO2 (a retry's record too, as a replay would),
    with a light and humidity reading matched or not."""
    out = []
    for r in records:
        if r.get("co2_ppm") is None:
            continue
        light = rng.choice([None, round(rng.uniform(0, 800), 1)])
        humidity = rng.choice([None, round(rng.uniform(20, 70), 1)])
        out.append(
            {
                "room_id": r["room_id"],
                "reading_id": r["reading_id"],
                "device_id": r["device_id"],
                "event_time": r["event_time"],
                "co2_ppm": r["co2_ppm"],
                "light_lux": light,
                "humidity_pct": humidity,
                "light_lag_s": None if light is None else rng.uniform(0, 30),
                "humidity_lag_s": None if humidity is None else rng.uniform(0, 30),
                "occupied": None if rng.random() < 0.02 else r["co2_ppm"] > 450,
                "_topic": r["_topic"],
                "_partition": r["_partition"],
                "_offset": r["_offset"],
            }
        )
    return out


@dataclass
class Lake:
    """A synthetic IoT lake and everything written to it (the oracle's input)."""

    lake: SyntheticLake
    rng: random.Random
    records: list[Row] = field(default_factory=list)
    anomalies: list[Row] = field(default_factory=list)
    room_states: list[Row] = field(default_factory=list)
    windows_generation: int = 0

    def send(self, readings: Sequence[Row]) -> None:
        """Readings as the IoT flow lands them, with what it writes beside them."""
        records = self.lake.offsets.assign(readings)
        self.records += records
        self.lake.commit("readings", records, rows_per_commit=500)
        anomalies = make_anomalies(self.rng, records)
        self.anomalies += anomalies
        self.lake.commit("anomalies", anomalies)
        room_states = make_room_states(self.rng, records)
        self.room_states += room_states
        self.lake.commit("room_state", room_states, rows_per_commit=400)
        self.upsert_windows(records)

    def upsert_windows(self, touched: Sequence[Row]) -> None:
        """Upsert the hopping windows the touched on-time readings fall in, recomputed
        over every on-time reading (a window corrected by a straggler is replaced)."""
        windows = device_windows(self.records)
        keys = {(r["device_id"], s) for r in touched if not r["late"] for s in starts(r)}
        writer = self.lake.writer("device_window")
        self.windows_generation = (writer.claim([WINDOWS_APP_ID])[WINDOWS_APP_ID] or 0) + 1
        rows = [w for k, w in windows.items() if k in keys]
        writer.upsert(
            self.lake.to_table("device_window", rows),
            {WINDOWS_APP_ID: self.windows_generation},
            keep_if="s.reading_count >= t.reading_count",
        )


def starts(reading: Row) -> list[datetime]:
    """The starts of the hopping windows (10 minutes, every 5) a reading falls in."""
    at: datetime = reading["event_time"]
    floor = at - timedelta(minutes=at.minute % 5, seconds=at.second, microseconds=at.microsecond)
    return [floor - HOP, floor]


def device_windows(records: Sequence[Row]) -> dict[Key, Row]:
    groups: dict[Key, list[Row]] = defaultdict(list)
    for r in dedupe(records, "reading_id"):
        if not r["late"]:
            for start in starts(r):
                groups[(r["device_id"], start)].append(r)
    out = {}
    for (device, start), members in groups.items():
        row: Row = {
            "device_id": device,
            "room_id": members[-1]["room_id"],
            "window_start": start,
            "window_end": start + WINDOW,
            "reading_count": len(members),
        }
        for metric in METRICS:
            values = [m[metric] for m in members if m.get(metric) is not None]
            row[f"{metric}_count"] = len(values)
            for stat, f in (("mean", fmean), ("min", min), ("max", max)):
                row[f"{metric}_{stat}"] = f(values) if values else None
        out[(device, start)] = row
    return out


# --------------------------------------------------------------------------------------
# the oracle
# --------------------------------------------------------------------------------------


def dedupe(
    rows: Sequence[Row], key: str, order: Sequence[str] = ("_offset", "_partition")
) -> list[Row]:
    """One row per ``key``, the first by ``order``."""
    best: dict[str, Row] = {}
    for row in rows:
        current = best.get(row[key])
        if current is None or tuple(row[o] for o in order) < tuple(current[o] for o in order):
            best[row[key]] = row
    return list(best.values())


def hour_of(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def device_hourly(lake: Lake) -> dict[Key, tuple[Any, ...]]:
    groups: dict[Key, list[Row]] = defaultdict(list)
    for r in dedupe(lake.records, "reading_id"):
        groups[(r["device_id"], hour_of(r["event_time"]))].append(r)
    out = {}
    for key, members in groups.items():
        stats: list[Any] = []
        for metric in METRICS:
            values = [m[metric] for m in members if m.get(metric) is not None]
            stats += [
                len(values),
                *((fmean(values), min(values), max(values)) if values else (None,) * 3),
            ]
        minutes = {m["event_time"].replace(second=0, microsecond=0) for m in members}
        out[key] = (
            members[0]["room_id"],
            len(members),
            sum(m["late"] for m in members),
            len(minutes),
            *stats,
        )
    return out


def device_uptime(lake: Lake) -> dict[Key, tuple[Any, ...]]:
    hourly = device_hourly(lake)
    newest = max(r["event_time"] for r in lake.records)
    out = {}
    for device, _room, _kind in DEVICES:
        hour = min(h for d, h in hourly if d == device)
        while hour <= hour_of(newest):
            active = hourly[(device, hour)][3] if (device, hour) in hourly else 0
            observed = newest.minute + 1 if hour == hour_of(newest) else 60
            out[(device, hour)] = (active, observed, active / observed)
            hour += timedelta(hours=1)
    return out


def room_occupancy(lake: Lake) -> dict[Key, tuple[Any, ...]]:
    groups: dict[Key, list[Row]] = defaultdict(list)
    for r in dedupe(lake.room_states, "reading_id"):
        groups[(r["room_id"], hour_of(r["event_time"]))].append(r)
    out = {}
    for key, members in groups.items():
        occupied = sum(1 for m in members if m["occupied"])
        lights = [m["light_lux"] for m in members if m["light_lux"] is not None]
        out[key] = (
            len(members),
            occupied,
            occupied / len(members),
            fmean(m["co2_ppm"] for m in members),
            fmean(lights) if lights else None,
            len(lights),
        )
    return out


def anomalies(lake: Lake) -> dict[str, tuple[Any, ...]]:
    first = dedupe(lake.anomalies, "anomaly_id", ("detected_at", "_partition", "_offset"))
    return {a["anomaly_id"]: (a["rule"], a["device_id"], a["detected_at"]) for a in first}


# --------------------------------------------------------------------------------------
# the warehouse
# --------------------------------------------------------------------------------------

HOURLY_STATS = ", ".join(f"{m}_count, {m}_mean, {m}_min, {m}_max" for m in METRICS)
MARTS_SQL = {
    "device_hourly": "select device_id, hour_start, room_id, reading_count, late_reading_count, "
    f"active_minutes, {HOURLY_STATS} from fct_iot__device_hourly",
    "device_uptime": "select device_id, hour_start, active_minutes, observed_minutes, "
    "uptime_share from fct_iot__device_uptime",
    "room_occupancy": "select room_id, hour_start, room_state_count, occupied_count, "
    "occupied_share, co2_ppm_mean, light_lux_mean, light_matched_count "
    "from fct_iot__room_occupancy",
    "anomalies": "select anomaly_id, rule, device_id, detected_at from fct_iot__anomalies",
    "device_window": "select device_id, window_start, reading_count, co2_ppm_mean "
    "from stg_iot__device_window",
}
KEY_WIDTH = {"anomalies": 1}


def snapshot(home: Path) -> dict[str, dict[Any, tuple[Any, ...]]]:
    """Each IoT mart (and the windows' staging view), keyed as its oracle."""
    # the windows' staging view reads the lake: the delta extension is loaded
    con = lake_tables.connect_duckdb(str(home / "warehouse.duckdb"), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        out = {}
        for name, sql in MARTS_SQL.items():
            width = KEY_WIDTH.get(name, 2)
            rows = con.execute(sql).fetchall()
            out[name] = {(r[0] if width == 1 else r[:width]): r[width:] for r in rows}
        return out
    finally:
        con.close()


def assert_equal(
    name: str, actual: dict[Any, tuple[Any, ...]], expected: dict[Any, tuple[Any, ...]]
) -> None:
    assert sorted(actual) == sorted(expected), name
    for key, want in expected.items():
        have = actual[key]
        assert len(have) == len(want), (name, key)
        for h, w in zip(have, want, strict=True):
            if isinstance(w, float):
                assert h == pytest.approx(w, rel=1e-9), (name, key, have, want)
            else:
                assert h == w, (name, key, have, want)


def assert_marts_match(snap: dict[str, dict[Any, tuple[Any, ...]]], lake: Lake) -> None:
    assert_equal("fct_iot__device_hourly", snap["device_hourly"], device_hourly(lake))
    assert_equal("fct_iot__device_uptime", snap["device_uptime"], device_uptime(lake))
    assert_equal("fct_iot__room_occupancy", snap["room_occupancy"], room_occupancy(lake))
    assert_equal("fct_iot__anomalies", snap["anomalies"], anomalies(lake))
    windows = device_windows(lake.records)
    expected = {k: (w["reading_count"], w["co2_ppm_mean"]) for k, w in windows.items()}
    assert_equal("stg_iot__device_window", snap["device_window"], expected)


@dataclass
class Scenario:
    empty: dict[str, dict[Any, tuple[Any, ...]]]
    lake: Lake
    first: dict[str, dict[Any, tuple[Any, ...]]]
    first_expected: dict[str, dict[Any, tuple[Any, ...]]]
    second: dict[str, dict[Any, tuple[Any, ...]]]
    second_sql: dict[str, str]
    second_dates: set[str]
    compacted: dict[str, dict[Any, tuple[Any, ...]]]


def builds(home: Path) -> Generator[None, DbtRun, Scenario]:
    """A build before any IoT table exists, then two micro-batches with a build after
    each, then compaction and a build. At each ``yield`` the lake is ready for the next
    build, whose run is sent back: the builds are shared with the payments scenario
    (``warehouse_scenarios`` in tests/integration/conftest.py)."""
    synthetic = SyntheticLake(home / "lake", domain="iot")
    synthetic.offsets = OffsetAssigner(topic=IOT_READINGS, partitions=3, key="device_id")
    lake = Lake(synthetic, random.Random(20261130))

    yield
    empty = snapshot(home)

    lake.send(make_readings(lake.rng, DAY0, hours=30, tag="a"))
    yield
    first = snapshot(home)
    first_expected = {"device_hourly": device_hourly(lake), "anomalies": anomalies(lake)}

    # a new day; late readings and retries of loaded readings into the first day
    fresh = make_readings(lake.rng, DAY0 + timedelta(days=2), hours=5, tag="b")
    late = make_readings(lake.rng, DAY0 + timedelta(hours=3), hours=1, tag="c", late=True)
    retries = [
        {k: v for k, v in r.items() if not k.startswith("_")}
        for r in lake.rng.sample(lake.records, 25)
        if r["event_time"] < DAY0 + timedelta(days=1)
    ]
    lake.send(fresh + late + retries)
    second_dates = {(DAY0 + timedelta(days=2)).date().isoformat(), DAY0.date().isoformat()}
    second_run = yield
    second = snapshot(home)
    second_sql = {
        model: second_run.compiled_sql(f"marts/iot/{model}.sql")
        for model in ("fct_iot__device_hourly", "fct_iot__room_occupancy", "fct_iot__anomalies")
    }

    for dataset in ("readings", "room_state", "anomalies"):
        assert lake_tables.compact(home / "lake", dataset, "iot").files_removed > 0, dataset
    yield
    return Scenario(
        empty, lake, first, first_expected, second, second_sql, second_dates, snapshot(home)
    )


@pytest.fixture(scope="module")
def scenario(warehouse_scenarios: dict[str, Any]) -> Scenario:
    return warehouse_scenarios["iot"]


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------


def test_the_build_passes_before_any_iot_table_exists(scenario: Scenario) -> None:
    assert all(rows == {} for rows in scenario.empty.values()), scenario.empty


def test_first_build_matches_the_oracle(scenario: Scenario) -> None:
    assert_equal("fct_iot__device_hourly", scenario.first["device_hourly"],
                 scenario.first_expected["device_hourly"])  # fmt: skip
    assert_equal("fct_iot__anomalies", scenario.first["anomalies"],
                 scenario.first_expected["anomalies"])  # fmt: skip
    assert len(scenario.first["device_hourly"]) > 100
    assert len(scenario.first["anomalies"]) > 10


def test_incremental_build_matches_the_oracle_over_everything(scenario: Scenario) -> None:
    assert_marts_match(scenario.second, scenario.lake)
    uptime = scenario.second["device_uptime"]
    assert any(active == 0 for active, *_ in uptime.values())  # silent hours are rows
    assert any(0 < share < 1 for *_, share in uptime.values())
    assert any(rule == "dropout" for rule, *_ in scenario.second["anomalies"].values())


def test_incremental_build_recomputes_only_the_changed_dates(scenario: Scenario) -> None:
    for model in ("fct_iot__device_hourly", "fct_iot__room_occupancy"):
        sql = scenario.second_sql[model]
        assert "changed date(s)" in sql, sql
        dates = {d for d in scenario.second_dates if f"'{d}'" in sql}
        assert dates == scenario.second_dates, (model, sql)
        middle = (DAY0 + timedelta(days=1)).date().isoformat()
        assert f"'{middle}'" not in sql, (model, sql)


def test_incremental_build_reads_only_anomalies_above_the_loaded_offsets(
    scenario: Scenario,
) -> None:
    sql = scenario.second_sql["fct_iot__anomalies"]
    assert "offsets above" in sql, sql


def test_compaction_changes_nothing_in_the_warehouse(scenario: Scenario) -> None:
    # (the same values, up to the order a mean added them in: the files are new)
    for name, rows in scenario.second.items():
        assert_equal(name, scenario.compacted[name], rows)
