"""``riverbed replay`` of the real recording into the real broker, checked against an
oracle that reads the CSV with the ``csv`` module and judges rows with the contract
itself (never through ``producers.replay``).

- the whole UCI Occupancy recording, with its recorded times, as fast as possible, run
  as the command docs/replay.md gives: every row in iot.readings, in order, none in the
  DLQ;
- the same recording shifted to now, as fast as possible: the rows run ahead of the
  clock, so all but those within 5 minutes of the first are future events and go to the
  DLQ, each with its reason, its line and the row as it is in the file;
- a file of real rows re-timed a quarter of a second apart, with deliberately broken
  rows, replayed in real time: paced by its own timestamps, shifted to now.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pytest
from confluent_kafka import Message

from producers.replay import ReplayOptions, replay
from producers.replay.recordings import recording_path
from riverbed import cli
from riverbed.contracts.iot import InvalidEvent, decode_reading
from riverbed.settings import Settings
from riverbed.topics import IOT_DLQ, IOT_READINGS
from tests.support.flow_harness import read_topic

pytestmark = pytest.mark.kafka

BRUSSELS = ZoneInfo("Europe/Brussels")  # the recording's local time (Mons, Belgium)
MAPS = ("V1=temperature_c", "V2=humidity_pct", "V3=light_lux", "V4=co2_ppm")
SETS = ("device_id=uci-occupancy-1", "room_id=mons-office")
COLUMNS = {"V1": "temperature_c", "V2": "humidity_pct", "V3": "light_lux", "V4": "co2_ppm"}
FUTURE = timedelta(minutes=5)


@dataclass(frozen=True)
class Row:
    """A data row as the oracle reads it: its line in the file and its text."""

    line: int
    raw: str
    cells: dict[str, str]


def oracle_rows(path: Path) -> list[Row]:
    """The CSV read with the csv module: one row a line (this file has no quoted cells)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = next(csv.reader([lines[0]]))
    rows = []
    for number, text in enumerate(lines[1:], start=2):
        if text.strip():
            rows.append(
                Row(number, text, dict(zip(header, next(csv.reader([text])), strict=False)))
            )
    return rows


def recorded(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BRUSSELS)


def rfc3339(when: datetime) -> str:
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def messages(settings: Settings, topic: str) -> list[Message]:
    return list(read_topic(settings, topic))


def header_map(message: Message) -> dict[str, str]:
    return {k: v.decode() for k, v in message.headers() or []}


def event_time(message: Message) -> datetime:
    text = msgspec.json.decode(message.value())["event_time"]
    return datetime.fromisoformat(text)


def kafka_time(message: Message) -> datetime:
    return datetime.fromtimestamp(message.timestamp()[1] / 1000, UTC)


def test_the_occupancy_recording_replays_as_recorded(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = recording_path("occupancy")
    rows = oracle_rows(path)
    assert len(rows) == 509
    monkeypatch.setenv("RIVERBED_KAFKA_BOOTSTRAP", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("RIVERBED_HOME", str(kafka_settings.home))
    argv = ["replay", "iot", str(path), "--time-column", "time", "--time-zone", "Europe/Brussels"]
    for spec in MAPS:
        argv += ["--map", spec]
    for spec in SETS:
        argv += ["--set", spec]
    assert cli.main([*argv, "--keep-time", "--as-fast-as-possible"]) == 0
    out = capsys.readouterr().out
    assert "read 509 rows, published 509 to iot.readings, 0 to iot.readings.dlq" in out
    assert "recorded 2015-02-04T16:51:00.000Z .. 2015-02-10T08:19:00.000Z (5 d 15 h 28 min)" in out

    published = messages(kafka_settings, IOT_READINGS)
    assert messages(kafka_settings, IOT_DLQ) == []
    assert len(published) == len(rows)
    assert {m.partition() for m in published} == {published[0].partition()}  # one device
    assert [m.offset() for m in published] == list(range(len(rows)))
    ids = set()
    for row, message in zip(rows, published, strict=True):
        assert message.key() == b"uci-occupancy-1"
        reading, when = decode_reading(message.value(), kafka_time(message))
        assert when == recorded(row.cells["time"])  # in order, at the recorded time
        assert (reading.device_id, reading.room_id) == ("uci-occupancy-1", "mons-office")
        for column, field in COLUMNS.items():
            assert getattr(reading, field) == float(row.cells[column])
        ids.add(reading.reading_id)
    assert len(ids) == len(rows)


def test_shifted_and_as_fast_as_possible_the_future_rows_go_to_the_dlq(
    kafka_settings: Settings,
) -> None:
    path = recording_path("occupancy")
    rows = oracle_rows(path)
    before = datetime.now(UTC)
    summary = replay(
        kafka_settings,
        ReplayOptions(
            domain="iot",
            path=path,
            time_column="time",
            maps=MAPS,
            sets=SETS,
            speed=None,
            time_zone="Europe/Brussels",
        ),
    )
    assert summary.ok and summary.rows == len(rows)

    published = messages(kafka_settings, IOT_READINGS)
    dead = messages(kafka_settings, IOT_DLQ)
    # The first row is now; the shift moves every row by the same amount.
    shift = event_time(published[0]) - recorded(rows[0].cells["time"])
    assert before - timedelta(seconds=1) <= event_time(published[0]) <= datetime.now(UTC)
    # The oracle: a row fits when its shifted time is at most 5 minutes past its send
    # (its Kafka timestamp; all sends are within a second or two here).
    sent_by = max(kafka_time(m) for m in published + dead)
    fits = [r for r in rows if recorded(r.cells["time"]) + shift <= sent_by + FUTURE]
    late = [r for r in rows if r not in fits]
    assert len(fits) == 1 and len(late) == 508  # 16 minutes between readings
    assert [event_time(m) for m in published] == [recorded(r.cells["time"]) + shift for r in fits]
    assert [m.value().decode() for m in dead] == [r.raw for r in late]
    for row, message in zip(late, dead, strict=True):
        shifted = rfc3339(recorded(row.cells["time"]) + shift)
        assert header_map(message) == {
            "error": f"event_time: '{shifted}' is more than 5 minutes in the future",
            "source.file": str(path.resolve()),
            "source.line": str(row.line),
        }
        assert message.key() == b"uci-occupancy-1"
    assert summary.dead_letters == {"event_time": 508}


# data row -> (column, the value that breaks it, the start of the reason the DLQ gives)
BREAKS = {
    3: ("V1", "999", "temperature_c: 999.0 must be within -40..125"),
    5: ("V2", "n/a", "humidity_pct: expected `float | null`, got `str`"),
    7: ("time", "soon", "time: 'soon' in column 'time' is not a time"),
    11: ("V4", "-3", "co2_ppm: -3.0 must be within 0..40000"),
}


def broken_file(tmp_path: Path, spacing_s: float) -> tuple[Path, dict[int, str]]:
    """The recording's first 14 rows re-timed ``spacing_s`` apart, five of them broken
    (:data:`BREAKS`, and row 9 a cell short). Returns the file and, per broken line, the
    start of the reason the DLQ must give."""
    source = oracle_rows(recording_path("occupancy"))[:14]
    start = datetime(2015, 2, 4, 17, 51)
    lines = ["time,V1,V2,V3,V4"]
    reasons: dict[int, str] = {}
    for number, row in enumerate(source, start=1):
        cells = dict(row.cells)
        at = start + timedelta(seconds=spacing_s * (number - 1))
        cells["time"] = at.isoformat(sep=" ", timespec="milliseconds")
        if number in BREAKS:
            column, value, reason = BREAKS[number]
            cells[column] = value
            reasons[number + 1] = reason
        values = [cells[c] for c in ("time", "V1", "V2", "V3", "V4")]
        if number == 9:
            values.pop()
            reasons[number + 1] = "row: 4 cells where the header has 5"
        lines.append(",".join(values))
    path = tmp_path / "office-broken.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, reasons


def test_broken_rows_go_to_the_dlq_and_the_rest_keep_their_pace(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    spacing = 0.25
    path, reasons = broken_file(tmp_path, spacing)
    rows = oracle_rows(path)
    progress: list[str] = []
    summary = replay(
        kafka_settings,
        ReplayOptions(domain="iot", path=path, time_column="time", maps=MAPS, sets=SETS, speed=1.0),
        progress=progress.append,
        progress_interval_s=1.0,
    )
    assert summary.ok and summary.stopped_by == "exhausted"

    # The oracle, from the file alone: which rows the test broke, and the rest.
    good = [r for r in rows if r.line not in reasons]
    bad = [r for r in rows if r.line in reasons]
    published = messages(kafka_settings, IOT_READINGS)
    dead = messages(kafka_settings, IOT_DLQ)
    assert (len(published), len(dead)) == (len(good), len(bad)) == (9, 5)
    assert (summary.published, summary.dead_lettered) == (9, 5)

    # Shifted: one fixed shift, the first row at the start (times without an offset: UTC).
    first = datetime.fromisoformat(good[0].cells["time"]).replace(tzinfo=UTC)
    shift = event_time(published[0]) - first
    for row, message in zip(good, published, strict=True):
        reading, when = decode_reading(message.value(), kafka_time(message))
        assert when == datetime.fromisoformat(row.cells["time"]).replace(tzinfo=UTC) + shift
        assert reading.temperature_c == float(row.cells["V1"])
    # Paced by the recording: sends follow the recorded spacing, in real time.
    sends = [kafka_time(m) for m in published]
    recorded_offsets = [
        (event_time(m) - event_time(published[0])).total_seconds() for m in published
    ]
    for sent, offset in zip(sends, recorded_offsets, strict=True):
        assert abs((sent - sends[0]).total_seconds() - offset) < 0.2
    assert 3.0 <= summary.wall_s < 6.0  # 13 gaps of 0.25 s, then the flush
    assert progress, "progress lines while it runs"

    for row, message in zip(bad, dead, strict=True):
        headers = header_map(message)
        assert headers["error"].startswith(reasons[row.line]), headers["error"]
        assert headers["source.line"] == str(row.line)
        assert headers["source.file"] == str(path.resolve())
        assert message.value().decode() == row.raw
        with pytest.raises(InvalidEvent):
            decode_reading(message.value())  # the original row, not a reading
    assert summary.dead_letters == {
        "temperature_c": 1,
        "humidity_pct": 1,
        "time": 1,
        "row": 1,
        "co2_ppm": 1,
    }
