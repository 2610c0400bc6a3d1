"""The IoT generator: deterministic, valid by contract, and honest about its labels.

The labels are checked against what the bytes show, read with the contract's own
decoder and plain JSON: a flat line is judged by the values repeating, a dropout by
the gap in the device's event times, a skew by the event time against the readings
sent around it, a spike by its distance from the device's neighbouring readings. The
bounds the test holds values to are its own, not the generator's.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime

import pytest

from producers.iot import (
    CLOCK_SKEW,
    DRIFT,
    DROPOUT,
    EPISODE_KINDS,
    FLATLINE,
    INVALID_KINDS,
    SPIKE_BASELINE,
    SPIKE_RANGE,
    GeneratedReading,
    IotConfig,
    IotGenerator,
)
from riverbed.contracts.iot import InvalidEvent, Reading, decode_reading
from riverbed.settings import load_settings

START = datetime(2026, 3, 2, tzinfo=UTC).timestamp()  # a Monday, midnight
DAY = 86_400.0
INTERVAL = 10.0
JITTER = 0.5
# Faults far more often than by default, so that one simulated day has many of each.
FAULTY = IotConfig(
    rooms=4,
    spike_share=0.002,
    drift_per_device_day=1.0,
    flatline_per_device_day=4.0,
    dropout_per_device_day=4.0,
    skew_per_device_day=1.0,
    invalid_share=0.01,
    duplicate_share=0.01,
)
# Every fault and noise rate of IotConfig, at zero.
QUIET = IotConfig(
    rooms=4,
    **dict.fromkeys(
        [name for name in IotConfig.__dataclass_fields__ if name.endswith(("_share", "_day"))],
        0.0,
    ),
)
# What each kind of device must send, by the suffix of its id.
MEASURES = {
    "climate": {"temperature_c", "humidity_pct"},
    "light": {"light_lux"},
    "air": {"co2_ppm"},
}
# The test's own idea of what an indoor room can read.
INDOORS = {
    "temperature_c": (5.0, 40.0),
    "humidity_pct": (10.0, 90.0),
    "light_lux": (0.0, 10_000.0),
    "co2_ppm": (300.0, 6000.0),
}
# Far from the neighbours: beyond anything a room does within a minute (a lamp
# switching is about 650 lux; a crowd raises CO2 by tens of ppm a minute).
FAR = {"temperature_c": 5.0, "humidity_pct": 15.0, "light_lux": 500.0, "co2_ppm": 1500.0}
# Near the neighbours: within what a room does in a minute (a lamp switching included).
NEAR = {"temperature_c": 1.0, "humidity_pct": 3.0, "light_lux": 700.0, "co2_ppm": 150.0}


def one_day(config: IotConfig, seed: int) -> tuple[IotGenerator, list[GeneratedReading]]:
    gen = IotGenerator(config, seed=seed, start=START)
    return gen, list(itertools.takewhile(lambda r: r.true_time < START + DAY, gen))


@pytest.fixture(scope="module")
def day() -> tuple[IotGenerator, list[GeneratedReading]]:
    return one_day(FAULTY, seed=7)


@pytest.fixture(scope="module")
def stream(day: tuple[IotGenerator, list[GeneratedReading]]) -> list[GeneratedReading]:
    return day[1]


@pytest.fixture(scope="module")
def quiet_day() -> tuple[IotGenerator, list[GeneratedReading]]:
    return one_day(QUIET, seed=11)


def values(reading: GeneratedReading) -> dict[str, float]:
    """The measurements on the wire, read as plain JSON."""
    fields = json.loads(reading.value)
    return {k: v for k, v in fields.items() if k in INDOORS and v is not None}


def decode(reading: GeneratedReading) -> tuple[Reading, datetime]:
    return decode_reading(reading.value, now=datetime.fromtimestamp(reading.true_time, UTC))


def firsts(stream: list[GeneratedReading]) -> list[GeneratedReading]:
    """The valid readings as first sent: what each device measured, in sending order."""
    return [r for r in stream if r.valid and not r.resent]


def by_device(stream: list[GeneratedReading]) -> dict[str, list[GeneratedReading]]:
    devices: dict[str, list[GeneratedReading]] = defaultdict(list)
    for reading in firsts(stream):
        devices[reading.device_id].append(reading)
    return devices


def wire_time(reading: GeneratedReading) -> float:
    return datetime.fromisoformat(json.loads(reading.value)["event_time"]).timestamp()


# --- determinism --------------------------------------------------------------------------


def first(n: int, gen: IotGenerator) -> list[GeneratedReading]:
    return list(itertools.islice(gen, n))


def test_same_seed_and_start_give_the_same_readings() -> None:
    a = first(20_000, IotGenerator(FAULTY, seed=42, start=START))
    b = first(20_000, IotGenerator(FAULTY, seed=42, start=START))
    assert a == b  # bytes and labels


def test_another_seed_or_start_gives_other_readings() -> None:
    def wire(gen: IotGenerator) -> list[tuple[bytes, bytes]]:
        return [(r.key, r.value) for r in first(1000, gen)]

    base = wire(IotGenerator(FAULTY, seed=42, start=START))
    assert base != wire(IotGenerator(FAULTY, seed=43, start=START))
    assert base != wire(IotGenerator(FAULTY, seed=42, start=START + 1))


def test_reading_ids_do_not_repeat_across_runs() -> None:
    def ids(seed: int, start: float) -> set[str]:
        return {r.reading_id for r in first(1000, IotGenerator(FAULTY, seed=seed, start=start))}

    assert not ids(1, START) & ids(2, START)
    assert not ids(1, START) & ids(1, START + 60)


# --- the contract -------------------------------------------------------------------------


def test_every_valid_reading_passes_the_contract(stream: list[GeneratedReading]) -> None:
    valid = [r for r in stream if r.valid]
    assert len(valid) > 0.98 * len(stream)
    for r in valid:
        reading, event_time = decode(r)
        assert (reading.reading_id, reading.device_id, reading.room_id) == (
            r.reading_id,
            r.device_id,
            r.room_id,
        )
        assert r.key == reading.device_id.encode()
        assert reading.device_id.startswith(f"{reading.room_id}-")
        assert set(values(r)) == MEASURES[reading.device_id.rsplit("-", 1)[1]]
        assert abs(event_time.timestamp() - r.event_time) < 0.001


REASONS = {
    "broken_json": r"value: not valid JSON",
    "missing_field": r"(reading_id|device_id|room_id|event_time): missing required field",
    "wrong_type": r"(device_id|temperature_c|humidity_pct|light_lux|co2_ppm): expected `",
    "out_of_range": r"(temperature_c|humidity_pct|light_lux|co2_ppm): .* must be within",
    "no_measurement": r"value: a reading needs at least one of",
    "empty_id": r"(reading_id|device_id|room_id): must be a non-empty string",
    "bad_time": r"event_time: .* is not RFC 3339",
    "future_time": r"event_time: .* more than 5 minutes in the future",
}


def test_every_malformed_message_is_rejected_for_the_reason_it_was_made_for(
    stream: list[GeneratedReading],
) -> None:
    assert set(REASONS) == set(INVALID_KINDS)
    malformed = [r for r in stream if not r.valid]
    assert {r.invalid_reason for r in malformed} == set(INVALID_KINDS)
    for r in malformed:
        with pytest.raises(InvalidEvent) as rejected:
            decode(r)
        assert r.invalid_reason is not None
        assert re.match(REASONS[r.invalid_reason], str(rejected.value)), (r, rejected.value)
        assert r.key == r.device_id.encode()


def test_noise_comes_at_the_configured_shares(stream: list[GeneratedReading]) -> None:
    n = len(stream)
    assert sum(not r.valid for r in stream) / n == pytest.approx(FAULTY.invalid_share, rel=0.2)
    assert sum(r.resent for r in stream) / n == pytest.approx(FAULTY.duplicate_share, rel=0.2)
    # Spikes land only on devices in no episode: a share of those readings.
    free = [r for r in firsts(stream) if r.fault not in EPISODE_KINDS]
    spikes = sum(r.fault in (SPIKE_RANGE, SPIKE_BASELINE) for r in free)
    assert spikes / len(free) == pytest.approx(FAULTY.spike_share, rel=0.25)


def test_a_resent_reading_repeats_an_earlier_one_byte_for_byte(
    stream: list[GeneratedReading],
) -> None:
    """... and recently: among its device's last 64 readings, where the flow looks."""
    seen: dict[str, bytes] = {}
    device_ids: dict[str, list[str]] = defaultdict(list)
    resent = 0
    for r in stream:
        if r.resent:
            resent += 1
            assert seen[r.reading_id] == r.value
            assert r.reading_id in device_ids[r.device_id][-64:]
        elif r.valid:
            assert r.reading_id not in seen
            seen[r.reading_id] = r.value
            device_ids[r.device_id].append(r.reading_id)
    assert resent > 0


def test_no_faults_asked_for_none_given(
    quiet_day: tuple[IotGenerator, list[GeneratedReading]],
) -> None:
    gen, readings = quiet_day
    assert all(r.valid and not r.resent and r.fault is None for r in readings)
    assert not gen.episodes


# --- rhythm, dropouts and skew -------------------------------------------------------------


def test_devices_report_every_interval_except_where_they_dropped_out(
    stream: list[GeneratedReading],
) -> None:
    devices = by_device(stream)
    assert len(devices) == 3 * FAULTY.rooms
    dropouts = 0
    for readings in devices.values():
        for before, after in itertools.pairwise(readings):
            if before.fault == CLOCK_SKEW or after.fault == CLOCK_SKEW:
                continue  # their event times are off: judged below
            gap = wire_time(after) - wire_time(before)
            if after.fault == DROPOUT:
                dropouts += 1
                # Minutes of silence: more than the flow's dropout rule needs (120 s).
                assert gap >= 180.0, after
            else:
                assert INTERVAL - 2 * JITTER <= gap <= INTERVAL + 2 * JITTER, (before, after)
    assert dropouts >= 20


def test_a_skewed_clock_shifts_event_time_by_a_constant(stream: list[GeneratedReading]) -> None:
    """Readings are sent in time order, so a skewed reading's event time minus that of
    the last unskewed reading sent before it is the skew plus the (short) wait between
    the two: constant but for at most one interval, tens of seconds either way."""
    offsets: dict[int, list[float]] = defaultdict(list)
    last_unskewed: float | None = None
    for r in firsts(stream):
        if r.fault != CLOCK_SKEW:
            last_unskewed = wire_time(r)
        elif last_unskewed is not None:
            assert r.fault_id is not None
            offsets[r.fault_id].append(wire_time(r) - last_unskewed)
    assert len(offsets) >= 4
    for episode in offsets.values():
        assert 10.0 <= abs(min(episode)) <= 100.0
        assert max(episode) - min(episode) <= INTERVAL + 2 * JITTER


# --- flat lines, spikes, drift --------------------------------------------------------------


def test_a_flat_line_repeats_the_exact_same_values(stream: list[GeneratedReading]) -> None:
    episodes: dict[int, list[GeneratedReading]] = defaultdict(list)
    for r in firsts(stream):
        if r.fault == FLATLINE:
            assert r.fault_id is not None
            episodes[r.fault_id].append(r)
    assert len(episodes) >= 20
    for readings in episodes.values():
        assert len({r.device_id for r in readings}) == 1
        assert len({json.dumps(values(r), sort_keys=True) for r in readings}) == 1
        last_ends_the_day = readings[-1].true_time > START + DAY - 1200
        # The 30 equal readings in a row the flow's flatline rule asks for by default.
        assert len(readings) >= 30 or last_ends_the_day


def test_no_value_repeats_for_two_minutes_outside_a_flat_line(
    stream: list[GeneratedReading],
) -> None:
    """Twelve equal values in a row (two minutes) are never normal: among the readings
    of a run of one value, at most eleven lie outside a flat line."""
    for readings in by_device(stream).values():
        for metric in values(readings[0]):
            unlabelled, last = 0, None
            for r in readings:
                value = values(r)[metric]
                if value != last:
                    unlabelled, last = 0, value
                unlabelled += r.fault != FLATLINE
                assert unlabelled < 12, r


def neighbours(readings: list[GeneratedReading], i: int, metric: str) -> float:
    """The median of a metric over a device's five readings either side of the i-th."""
    around = readings[max(0, i - 5) : i] + readings[i + 1 : i + 6]
    return statistics.median(values(r)[metric] for r in around if r.fault is None)


def test_spikes_are_where_their_labels_say(stream: list[GeneratedReading]) -> None:
    kinds: Counter[str] = Counter()
    for readings in by_device(stream).values():
        for i, r in enumerate(readings):
            if r.fault not in (SPIKE_RANGE, SPIKE_BASELINE):
                continue
            kinds[r.fault] += 1
            assert r.metric is not None
            value = values(r)[r.metric]  # inside the contract's ranges: it decoded
            low, high = INDOORS[r.metric]
            usual = neighbours(readings, i, r.metric)
            if r.fault == SPIKE_RANGE:
                assert not low <= value <= high, r
            else:
                assert low <= value <= high, r
                assert abs(value - usual) >= FAR[r.metric], (r, usual)
            assert r.clean is not None and abs(r.clean - usual) < NEAR[r.metric]
    assert kinds[SPIKE_RANGE] >= 20 and kinds[SPIKE_BASELINE] >= 20


def test_a_drift_grows_for_hours_and_is_gone_after(stream: list[GeneratedReading]) -> None:
    devices = by_device(stream)
    episodes: dict[int, list[GeneratedReading]] = defaultdict(list)
    for r in firsts(stream):
        if r.fault == DRIFT:
            assert r.fault_id is not None
            episodes[r.fault_id].append(r)
    whole = 0
    for readings in episodes.values():
        metric = readings[0].metric
        assert metric is not None and {r.metric for r in readings} == {metric}
        offsets = [values(r)[metric] - r.clean for r in readings if r.clean is not None]
        assert abs(offsets[0]) < 0.1 * abs(offsets[-1]) + 0.02
        growth = [abs(b) - abs(a) for a, b in itertools.pairwise(offsets)]
        assert min(growth) > -0.02  # never shrinks (but for rounding)
        after = [r for r in devices[readings[0].device_id] if r.true_time > readings[-1].true_time]
        if not after:
            continue  # still drifting when the day ended
        whole += 1
        assert readings[-1].true_time - readings[0].true_time >= 2 * 3600 - INTERVAL
        # The next reading shows the offset gone, unless it is itself off (a spike, a
        # new drift, a reading after minutes of silence) or lamps may have switched.
        if metric != "light_lux" and after[0].fault in (None, FLATLINE, CLOCK_SKEW):
            jump = values(readings[-1])[metric] - values(after[0])[metric]
            assert jump == pytest.approx(offsets[-1], abs=0.25 * abs(offsets[-1]))
    assert whole >= 2


def test_episodes_come_at_about_their_rates(
    day: tuple[IotGenerator, list[GeneratedReading]],
) -> None:
    gen, _ = day
    started = Counter(e.kind for e in gen.episodes)
    devices = 3 * FAULTY.rooms
    # A device in one episode starts no other: fewer than the rates alone would give.
    assert started[FLATLINE] >= 0.5 * FAULTY.flatline_per_device_day * devices
    assert started[DROPOUT] >= 0.5 * FAULTY.dropout_per_device_day * devices
    assert started[DRIFT] >= 0.3 * FAULTY.drift_per_device_day * devices
    assert started[CLOCK_SKEW] >= 0.3 * FAULTY.skew_per_device_day * devices
    assert set(started) == set(EPISODE_KINDS)


# --- occupancy ------------------------------------------------------------------------------


def by_occupancy(readings: list[GeneratedReading], metric: str) -> tuple[list[float], list[float]]:
    occupied, empty = [], []
    for r in readings:
        if metric in values(r):
            (occupied if r.occupied else empty).append(values(r)[metric])
    return occupied, empty


def test_the_labels_are_the_ground_truth_of_occupancy(
    quiet_day: tuple[IotGenerator, list[GeneratedReading]],
) -> None:
    gen, readings = quiet_day
    for r in readings[::50]:
        assert r.occupied == gen.occupied(r.room_id, r.true_time) == (r.people > 0)
    at = {h: [gen.people(room.room_id, START + h * 3600) for room in gen.rooms] for h in (3, 11)}
    assert not any(at[3])  # nobody at night
    assert any(at[11])  # somebody on a Monday morning
    saturday = START + 5 * DAY + 3 * 3600
    assert not any(gen.occupied(room.room_id, saturday) for room in gen.rooms)


def test_people_turn_the_lights_on(quiet_day: tuple[IotGenerator, list[GeneratedReading]]) -> None:
    occupied, empty = by_occupancy(quiet_day[1], "light_lux")
    assert statistics.mean(occupied) > 300.0
    assert statistics.mean(empty) < 100.0
    assert statistics.quantiles(occupied, n=20)[0] > 250.0  # lit nearly always when occupied


def test_people_raise_co2_and_empty_rooms_air_out(
    quiet_day: tuple[IotGenerator, list[GeneratedReading]],
) -> None:
    occupied, empty = by_occupancy(quiet_day[1], "co2_ppm")
    assert statistics.mean(occupied) > 750.0
    assert statistics.mean(empty) < 550.0
    assert 800.0 <= max(occupied) <= 1500.0
    night = [values(r)["co2_ppm"] for r in quiet_day[1] if "co2_ppm" in values(r)]
    night = night[: len(night) // 6]  # midnight to 4:00
    assert statistics.mean(night) == pytest.approx(420.0, abs=15.0)


def test_people_raise_humidity_a_little(
    quiet_day: tuple[IotGenerator, list[GeneratedReading]],
) -> None:
    """In daytime, in each room, readings after half an hour of people are damper than
    after half an hour without (moisture takes a while to come and go)."""
    gen, readings = quiet_day

    def settled(r: GeneratedReading) -> bool:
        return all(gen.occupied(r.room_id, r.true_time - s) == r.occupied for s in (900, 1800))

    for room in gen.rooms:
        daytime = [
            r
            for r in readings
            if r.room_id == room.room_id and 8 <= (r.true_time - START) / 3600 < 19 and settled(r)
        ]
        occupied, empty = by_occupancy(daytime, "humidity_pct")
        assert 0.5 < statistics.mean(occupied) - statistics.mean(empty) < 8.0, room


# --- settings ----------------------------------------------------------------------------------


def test_rooms_and_devices_are_named_as_the_contract_expects() -> None:
    gen = IotGenerator(IotConfig(rooms=3), seed=1, start=START)
    assert [d.device_id for d in gen.devices[:3]] == [
        "room-01-climate",
        "room-01-light",
        "room-01-air",
    ]
    assert len(gen.devices) == 9
    assert {r.device_id for r in first(200, gen)} == {d.device_id for d in gen.devices}


def test_settings_feed_the_config() -> None:
    settings = load_settings(producer_invalid_share=0.02, producer_duplicate_share=0.03)
    config = IotConfig.from_settings(settings, rooms=5)
    assert (config.rooms, config.invalid_share, config.duplicate_share) == (5, 0.02, 0.03)
    assert IotConfig.from_settings(settings).rooms == 8
    assert config.live_rate == pytest.approx(1.5)
