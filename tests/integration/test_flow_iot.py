"""The IoT flow on the real broker: killed with SIGKILL while it works, restarted, and
then everything it wrote equals the oracle computed from the input.

The input is the planted recording of :mod:`tests.support.iot_recording` (two rooms,
six devices, faults), published keyed by device. The flow runs with recovery as a
deployment runs it (``flows.run`` with a recovery store) and is killed twice at
random moments; the last run catches up. Then: every valid reading is in the lake
once with the lateness the oracle gives it, every invalid message in the DLQ once,
every planted anomaly on ``iot.anomalies`` once (read committed), and the lake's
device windows and room states equal the oracle's, computed with polars.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
from confluent_kafka import Producer

from producers.kafka_loop import PRODUCER_DEFAULTS
from riverbed import lake
from riverbed.contracts.iot import Anomaly
from riverbed.settings import Settings, load_settings
from riverbed.topics import IOT_ANOMALIES, IOT_DLQ, IOT_READINGS
from tests.support.flow_harness import (
    committed_offsets,
    end_offsets,
    lake_offsets,
    query,
    read_records,
    read_topic,
    start_flow,
    stop_flow,
    wait_until,
)
from tests.support.iot_recording import (
    DEVICES,
    DROPPED,
    FLATLINE,
    PER_DEVICE,
    oracle_readings,
    oracle_rooms,
    oracle_windows,
    recording,
)

EVENTS = ("iot", "readings")


def _scan(settings: Settings, dataset: str) -> str:
    return lake.scan_sql(settings.lake_dir, dataset, "iot")


def _publish(settings: Settings, messages: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({**settings.kafka_client_config(), **PRODUCER_DEFAULTS})
    for key, value in messages:
        producer.produce(IOT_READINGS, key=key, value=value)
        producer.poll(0)
    assert producer.flush(30) == 0


def test_the_iot_flow_is_exactly_once_through_sigkills(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = load_settings(
        kafka_bootstrap=kafka_settings.bootstrap_servers,
        consumer_group=kafka_settings.consumer_group,
        home=kafka_settings.home,
        flush_interval_s=0.4,
        snapshot_interval_s=1,
        iot_flatline_readings=FLATLINE,
        log_level="INFO",
    )
    t0 = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    messages, planted = recording(t0)
    _publish(settings, messages)
    log = tmp_path / "flow.log"
    rng = random.Random(5)
    for kill in range(2):
        procs = start_flow(settings, log, flow="iot")
        time.sleep(rng.uniform(2.5, 5.0))  # start-up, then some way into the backlog
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        log.open("a").write(f"\n==== kill {kill + 1} ====\n")

    records = read_records(settings, IOT_READINGS)
    assert len(records) == len(messages)
    parts: dict[int, list] = {}
    for partition, offset, key, value, ts in records:
        parts.setdefault(partition, []).append((offset, key, value, ts))
    readings = oracle_readings(parts)
    assert readings.height == DEVICES * PER_DEVICE - DROPPED
    windows = oracle_windows(readings)
    rooms = oracle_rooms(readings)
    # Partitions no device hashes to stay empty: nothing to commit there.
    ends = {p: o for p, o in end_offsets(settings, IOT_READINGS).items() if o}

    def moved(offsets: dict[int, int]) -> dict[int, int]:
        return {p: o for p, o in offsets.items() if o > 0}

    procs = start_flow(settings, log, flow="iot")
    try:
        wait_until(
            lambda: (
                moved(committed_offsets(settings, IOT_READINGS)) == ends
                and moved(lake_offsets(settings, IOT_READINGS, EVENTS)) == ends
            ),
            120,
            "the group's and the lake's offsets to reach the end of the topic",
            procs,
            log,
        )
        wait_until(
            lambda: (
                lake.table_exists(settings.lake_dir, "room_state", "iot")
                and query(f"select count(*) from {_scan(settings, 'room_state')}")[0][0]
                >= len(rooms)
                and query(f"select count(*) from {_scan(settings, 'device_window')}")[0][0]
                >= len(windows)
            ),
            90,
            "the partitions to go idle and every window and room state to be written",
            procs,
            log,
        )
        time.sleep(1.5)  # one more flush: anything still to come would show up now
    finally:
        stop_flow(procs)

    stored = query(f"select reading_id, late from {_scan(settings, 'readings')}")
    assert len(stored) == readings.height, "every valid reading once"
    assert set(stored) == set(readings.select("reading_id", "late").iter_rows())

    dlq = [m for m in read_topic(settings, IOT_DLQ)]
    assert len(dlq) == planted["invalid"]
    assert all(dict(m.headers())["error"] for m in dlq)

    anomalies = [
        msgspec.json.decode(m.value(), type=Anomaly) for m in read_topic(settings, IOT_ANOMALIES)
    ]
    counts = Counter((a.rule, a.reading_id, a.metric) for a in anomalies)
    assert counts == {
        ("range", "r1-climate-77", "temperature_c"): 1,
        ("flatline", "r2-climate-61", "humidity_pct"): 1,
        ("dropout", "r1-light-130", None): 1,
    }
    assert query(f"select count(*) from {_scan(settings, 'anomalies')}") == [(3,)]

    got_windows = query(
        f"""select device_id, epoch_us(window_start), reading_count, co2_ppm_count,
                   co2_ppm_max, round(light_lux_mean, 6)
            from {_scan(settings, "device_window")}"""
    )
    assert len(got_windows) == len(windows)
    assert set(got_windows) == windows

    got_rooms = query(
        f"""select room_id, reading_id, light_lux, humidity_pct, occupied
            from {_scan(settings, "room_state")}"""
    )
    assert {(r[0], r[1]): (r[2], r[3], r[4]) for r in got_rooms} == rooms
