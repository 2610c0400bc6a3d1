"""The IoT producer against a real broker: ``riverbed produce iot`` publishes what it
says, keyed by device and partitioned as every Riverbed producer partitions, and a
consumer reads back readings the contract accepts, none from the future."""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest

from producers.iot import IotConfig, IotGenerator, produce_iot
from producers.kafka_loop import produce, producer_config
from riverbed import prometheus
from riverbed.contracts.iot import InvalidEvent, decode_reading
from riverbed.settings import Settings
from riverbed.topics import IOT_READINGS, KEY_PARTITIONER, PRODUCER_DEFAULTS, topic
from tests.integration.test_cluster import riverbed_cli
from tests.support.flow_harness import read_records
from tests.unit.producers.test_lateness import partition_of

pytestmark = pytest.mark.kafka

PARTITIONS = topic(IOT_READINGS).partitions
DEVICE_ID = re.compile(r"room-\d\d-(climate|light|air)")


def assert_partitioned_by_device(records: list[tuple[int, int, bytes, bytes, int]]) -> None:
    """Each device's readings in one partition: the one murmur2 (the Java client's
    partitioner, which KEY_PARTITIONER names) picks for its id."""
    assert PRODUCER_DEFAULTS["partitioner"] == KEY_PARTITIONER == "murmur2_random"
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for partition, _, key, _, _ in records:
        partitions[key].add(partition)
    for key, seen in partitions.items():
        assert seen == {partition_of(key, PARTITIONS)}, key


def test_riverbed_produce_iot_publishes_count_readings(kafka_settings: Settings) -> None:
    began = time.time()
    done = riverbed_cli(
        kafka_settings, "produce", "iot", "--count", "1500", "--seed", "5", "--rooms", "3"
    )
    assert done.returncode == 0, done.stderr
    assert "iot.readings: sent 1,500, delivered 1,500, failed 0" in done.stdout
    assert "seed 5" in done.stdout

    records = read_records(kafka_settings, IOT_READINGS)
    assert len(records) == 1500
    keys = Counter(key for _, _, key, _, _ in records)
    assert len(keys) == 9  # three rooms of three devices
    assert all(DEVICE_ID.fullmatch(key.decode()) for key in keys)
    assert_partitioned_by_device(records)

    valid = 0
    for _, _, key, value, timestamp_ms in records:
        sent_at = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
        try:
            reading, event_time = decode_reading(value, now=sent_at)
        except InvalidEvent:
            continue  # a malformed message, as the producer mixes in
        valid += 1
        assert reading.device_id.encode() == key
        # The run replays the recent past (1,500 readings at 0.9 a second: under half an
        # hour) and ends about now; a skewed clock may be up to 90 s off.
        assert began - 1800 - 90 <= event_time.timestamp() <= sent_at.timestamp() + 90
    assert valid >= 0.97 * len(records)


def test_what_is_sent_is_what_a_consumer_reads_back(kafka_settings: Settings) -> None:
    generator = IotGenerator(IotConfig(), seed=2024, start=time.time() - 3600)
    readings = list(itertools.takewhile(lambda r: r.true_time < time.time(), generator))
    summary = produce(readings, topic=IOT_READINGS, config=producer_config(kafka_settings))
    assert summary.ok and summary.sent == summary.delivered == len(readings) > 8000

    records = read_records(kafka_settings, IOT_READINGS)
    assert sorted((k, v) for _, _, k, v, _ in records) == sorted((r.key, r.value) for r in readings)
    assert_partitioned_by_device(records)
    assert {p for p, _, _, _, _ in records} == set(range(PARTITIONS))
    # A device's readings keep their order: the partition is a log.
    for device, sent in itertools.groupby(sorted(readings, key=lambda r: r.key), lambda r: r.key):
        got = [v for _, _, k, v, _ in records if k == device]
        assert got == [r.value for r in sent], device


def test_the_producer_serves_its_metrics_while_it_runs(kafka_settings: Settings) -> None:
    target = prometheus.home(kafka_settings) / "targets" / "producer" / f"iot-{os.getpid()}.json"
    run = threading.Thread(
        target=produce_iot,
        args=(kafka_settings,),
        kwargs={"rate": 100, "count": 500, "duration": None, "seed": 3, "serve_metrics": True},
    )
    run.start()
    try:
        deadline = time.monotonic() + 30
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        (address,) = json.loads(target.read_text())[0]["targets"]
        time.sleep(1.0)  # some sent by then
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as page:
            scraped = page.read().decode()
    finally:
        run.join(60)
    sent = re.search(r'^riverbed_producer_sent_total\{topic="iot.readings"\} (\S+)$', scraped, re.M)
    assert sent is not None and float(sent.group(1)) > 0, scraped
    assert 'riverbed_producer_target_rate_events_per_second{topic="iot.readings"} 100.0' in scraped
    assert not target.exists()  # unregistered at the end
