"""The IoT processor's rules and the room join, driven directly (no Bytewax, no Kafka)."""

from __future__ import annotations

import json
import pickle

from flows.iot.config import IotConfig
from flows.iot.processor import DeviceProcessor
from flows.iot.records import RoomInput, RoomReading
from flows.iot.room_join import RoomJoin
from flows.kit.records import SourceBatch
from riverbed.contracts.iot import DeviceBaseline, HourBaseline, MetricBaseline, encode

US = 1_000_000
T0 = 1_796_000_000 * US - (1_796_000_000 * US) % (3600 * US)  # on an hour
TS = (T0 + 3600 * US) // 1000  # Kafka timestamps: after every event time


def reading(i: int, device: str = "d1", **values: float) -> bytes:
    t = T0 + i * 10 * US
    stamp = f"{t // US}"
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(int(stamp), UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(
        {"reading_id": f"{device}-{i}", "device_id": device, "room_id": "r", "event_time": when}
        | values
    ).encode()


def baseline(device: str, mean: float, std: float) -> bytes:
    hour = (T0 // (3600 * US)) % 24
    return encode(
        DeviceBaseline(
            device_id=device,
            room_id="r",
            hours=[HourBaseline(hour=hour, co2_ppm=MetricBaseline(mean, std, 100))],
            reading_count=100,
            last_event_time="2026-11-30T00:00:00Z",
            computed_at="2026-11-30T00:00:00Z",
            window_days=14,
        )
    )


def test_a_baseline_published_mid_stream_judges_only_the_readings_after_it() -> None:
    processor = DeviceProcessor(0, IotConfig())
    records = [(o, b"d1", reading(o, co2_ppm=1500.0), TS + o) for o in range(6)]
    # The baseline's Kafka timestamp falls between offsets 2 and 3.
    table = [(0, b"d1", baseline("d1", 450.0, 30.0), TS + 2)]
    out = processor.process(SourceBatch(0, records, 6, table=table), 0)
    judged = sorted(a.reading_id for a in out.batch.alerts if a.rule == "baseline")
    assert judged == ["d1-2", "d1-3", "d1-4", "d1-5"]
    # After a restart the same baseline, read again, changes nothing already decided,
    # and a tombstone withdraws it for what follows.
    again = pickle.loads(pickle.dumps(processor))
    again.configure(IotConfig())
    later = [(6, b"d1", reading(6, co2_ppm=1500.0), TS + 10)]
    tomb = [(1, b"d1", None, TS + 9)]
    out = again.process(SourceBatch(0, later, 7, table=tomb), 0)
    assert not [a for a in out.batch.alerts if a.rule == "baseline"]


def test_no_baseline_no_judgement_and_a_dark_room_is_not_a_flat_line() -> None:
    processor = DeviceProcessor(0, IotConfig(flatline_readings=5))
    records = [(o, b"d1", reading(o, light_lux=0.0, co2_ppm=800.0), TS) for o in range(8)]
    out = processor.process(SourceBatch(0, records, 8), 0)
    rules = [(a.rule, a.metric) for a in out.batch.alerts]
    assert rules == [("flatline", "co2_ppm")], "CO2 stuck at 800: once; light 0: darkness"


def test_an_out_of_order_reading_does_not_end_a_dropout_or_a_run() -> None:
    processor = DeviceProcessor(0, IotConfig(dropout_us=60 * US))
    records = [
        (0, b"d1", reading(0, co2_ppm=500.0), TS),
        (1, b"d1", reading(20, co2_ppm=510.0), TS),  # 200 s later: a dropout
        (2, b"d1", reading(19, co2_ppm=505.0), TS),  # older than the newest: not one
    ]
    out = processor.process(SourceBatch(0, records, 3), 0)
    assert [(a.rule, a.reading_id, a.score) for a in out.batch.alerts] == [
        ("dropout", "d1-20", 200.0)
    ]


def _r(room: str, rid: str, t_s: float, p: int, **v: float) -> RoomReading:
    return RoomReading(
        room,
        rid,
        rid.split("-")[0],
        int(t_s * US),
        v.get("co2"),
        v.get("light"),
        v.get("hum"),
        p,
        0,
    )


def test_the_room_join_waits_for_every_busy_partition_and_stays_bounded() -> None:
    join = RoomJoin.for_partitions([0, 1], IotConfig())
    rows = join.on_input(RoomInput(0, [_r("a", "co2-1", 100, 0, co2=900)], 200 * US, False))
    assert rows == [], "partition 1 has not said how far it is"
    # Partition 1's light readings: 20 s after (nearest) and 25 s before.
    rows = join.on_input(
        RoomInput(
            1,
            [_r("a", "lux-1", 75, 1, light=10), _r("a", "lux-2", 120, 1, light=500)],
            129 * US,
            False,
        )
    )
    assert rows == [], "partition 1's watermark is not past 100 + 30 s yet"
    rows = join.on_input(RoomInput(1, [], 131 * US, False))
    assert [(r.reading_id, r.light_lux, r.light_lag_us, r.occupied) for r in rows] == [
        ("co2-1", 500, 20 * US, True)
    ]
    # What no future anchor can reach (older than the watermark minus the interval) is
    # gone, and counted if it matched nothing.
    assert [v[1] for v in join.rooms["a"].light] == ["lux-2"]
    assert join.unmatched == {"anchor_without_humidity": 1, "light": 1}


def test_an_idle_partition_is_not_waited_for() -> None:
    join = RoomJoin.for_partitions([0, 1], IotConfig())
    join.on_input(RoomInput(1, [], None, True))
    rows = join.on_input(
        RoomInput(0, [_r("a", "x-1", 10, 0, co2=500, light=5, hum=40)], 50 * US, False)
    )
    assert [(r.light_lux, r.humidity_pct, r.light_lag_us, r.occupied) for r in rows] == [
        (5, 40, 0, False)
    ], "a reading carrying every measurement matches itself"
