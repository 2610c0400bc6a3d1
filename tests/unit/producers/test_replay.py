"""``riverbed replay`` without a broker: the schedule (on an injected clock, no sleeping),
``--map``/``--set``, the derived ids, the dead-letter reasons and every error message.

The Kafka side is :func:`producers.replay.replay`'s; here :class:`Replayer` sends into a
list, stamped with the fake clock's time at each send.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from producers.replay import Outgoing, Replayer, ReplayError, ReplayOptions, Schedule, domain
from producers.replay.cli import options_from
from producers.replay.mapping import RowMapping, format_time, parse_time
from producers.replay.recording import Recording
from producers.replay.recordings import recording_path
from riverbed import cli
from riverbed.topics import IOT_DLQ, IOT_READINGS, PAYMENTS_TRANSACTIONS

WALL = 1_800_000_000.0  # 2027-01-15T08:00:00Z: the fake clock's wall time at the start
IOT = domain("iot")

OFFICE = """\
time,Temperature,Humidity,Light,CO2
2015-02-04 17:51:00,23.18,27.272,426.0,721.25
2015-02-04 17:52:00,23.15,27.2675,429.5,714
2015-02-04 17:52:30,23.15,27.245,426.0,713.5
2015-02-04 17:55:00,23.15,27.2,426.0,708.25
"""
OFFICE_MAPS = (
    "Temperature=temperature_c",
    "Humidity=humidity_pct",
    "Light=light_lux",
    "CO2=co2_ppm",
)
OFFICE_SETS = ("device_id=office-1", "room_id=mons")


class FakeClock:
    """Time moves only when the replay sleeps."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.sleeps = 0

    def time(self) -> float:
        return WALL + self.elapsed

    def monotonic(self) -> float:
        return self.elapsed

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.elapsed += seconds
        self.sleeps += 1


class NoStop:
    requested = False


def write(tmp_path: Path, text: str, name: str = "office.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run(
    path: Path,
    *,
    dom: str = "iot",
    time_column: str = "time",
    maps: tuple[str, ...] = OFFICE_MAPS,
    sets: tuple[str, ...] = OFFICE_SETS,
    speed: float | None = 1.0,
    keep_time: bool = True,
    id_column: str | None = None,
    time_zone: str = "UTC",
) -> tuple[list[tuple[float, Outgoing]], Replayer, list[str]]:
    """Replay ``path`` into a list: (fake monotonic time of the send, message)."""
    options = ReplayOptions(
        domain=dom,
        path=path,
        time_column=time_column,
        maps=maps,
        sets=sets,
        id_column=id_column,
        speed=speed,
        keep_time=keep_time,
        time_zone=time_zone,
    )
    recording = Recording.open(path)
    mapping = RowMapping.build(
        domain(dom),
        recording.header,
        time_column=time_column,
        maps=maps,
        sets=sets,
        id_column=id_column,
        time_zone=time_zone,
    )
    clock = FakeClock()
    said: list[str] = []
    replayer = Replayer(domain(dom), recording, mapping, options, clock=clock, progress=said.append)
    sent: list[tuple[float, Outgoing]] = []
    stopped = replayer.run(lambda m: sent.append((clock.monotonic(), m)), lambda _: None, NoStop())
    assert stopped == "exhausted"
    return sent, replayer, said


def body(message: Outgoing) -> dict[str, object]:
    return msgspec.json.decode(message.value)


def headers(message: Outgoing) -> dict[str, str]:
    return {k: v.decode() for k, v in message.headers}


# --- the schedule ----------------------------------------------------------------------


def test_rows_are_sent_at_the_recorded_spacing_in_real_time(tmp_path: Path) -> None:
    sent, _, _ = run(write(tmp_path, OFFICE), speed=1.0)
    assert [round(t, 6) for t, _ in sent] == [0.0, 60.0, 90.0, 240.0]
    assert all(m.topic == IOT_READINGS for _, m in sent)


def test_speed_scales_the_spacing(tmp_path: Path) -> None:
    sent, _, _ = run(write(tmp_path, OFFICE), speed=60.0)
    assert [round(t, 6) for t, _ in sent] == [0.0, 1.0, 1.5, 4.0]


def test_as_fast_as_possible_never_waits(tmp_path: Path) -> None:
    sent, replayer, _ = run(write(tmp_path, OFFICE), speed=None)
    assert [t for t, _ in sent] == [0.0] * 4
    assert replayer.clock.sleeps == 0  # type: ignore[attr-defined]


def test_keep_time_keeps_the_recorded_event_times(tmp_path: Path) -> None:
    sent, _, _ = run(write(tmp_path, OFFICE), keep_time=True)
    assert [body(m)["event_time"] for _, m in sent] == [
        "2015-02-04T17:51:00.000Z",
        "2015-02-04T17:52:00.000Z",
        "2015-02-04T17:52:30.000Z",
        "2015-02-04T17:55:00.000Z",
    ]


def test_shifted_times_start_now_and_keep_the_spacing(tmp_path: Path) -> None:
    sent, _, said = run(write(tmp_path, OFFICE), keep_time=False, speed=1.0)
    start = datetime.fromtimestamp(WALL, UTC)
    expected = [start + timedelta(seconds=s) for s in (0, 60, 90, 240)]
    assert [body(m)["event_time"] for _, m in sent] == [format_time(t) for t in expected]
    assert not any("ahead of the clock" in line for line in said)


def test_shifted_and_faster_than_real_time_runs_ahead_and_says_so(tmp_path: Path) -> None:
    # 10 minutes of recording sent in one second: rows more than 5 minutes ahead of their
    # send time are future events, which the contract (and the flow) rejects.
    text = "time,Temperature\n2015-02-04 17:00:00,20\n2015-02-04 17:04:00,20\n"
    text += "2015-02-04 17:10:00,20\n"
    sent, replayer, said = run(
        write(tmp_path, text),
        maps=("Temperature=temperature_c",),
        keep_time=False,
        speed=None,
    )
    assert [m.topic for _, m in sent] == [IOT_READINGS, IOT_READINGS, IOT_DLQ]
    assert "more than 5 minutes in the future" in headers(sent[2][1])["error"]
    assert any("add --keep-time" in line for line in said)
    assert replayer.tally.dead == {"event_time": 1}


def test_a_row_recorded_earlier_than_the_last_is_sent_at_once(tmp_path: Path) -> None:
    text = OFFICE + "2015-02-04 17:53:00,23.1,27.2,426.0,708\n"
    sent, _, _ = run(write(tmp_path, text), speed=1.0)
    assert [round(t, 6) for t, _ in sent] == [0.0, 60.0, 90.0, 240.0, 240.0]
    assert body(sent[-1][1])["event_time"] == "2015-02-04T17:53:00.000Z"


def test_schedule_without_a_replay() -> None:
    first = datetime(2015, 2, 4, 17, 51, tzinfo=UTC)
    schedule = Schedule.start(first, started_at=WALL + 0.0004, speed=4.0, keep_time=False)
    later = first + timedelta(minutes=2)
    assert schedule.send_offset(later) == 30.0
    assert schedule.send_offset(first - timedelta(seconds=5)) == 0.0
    # The shift is whole milliseconds, so recorded fractions survive.
    assert schedule.event_time(later) == datetime.fromtimestamp(WALL + 120, UTC)
    assert schedule.runs_ahead()
    assert not Schedule.start(first, started_at=WALL, speed=4.0, keep_time=True).runs_ahead()
    assert not Schedule.start(first, started_at=WALL, speed=1.0, keep_time=False).runs_ahead()


def test_progress_says_where_in_the_recording_it_is(tmp_path: Path) -> None:
    rows = "".join(f"2015-02-04 17:{m:02d}:00,21.0\n" for m in range(0, 60))
    path = write(tmp_path, "time,Temperature\n" + rows)
    _, _, said = run(path, maps=("Temperature=temperature_c",), speed=10.0)
    progress = [line for line in said if line.startswith(IOT_READINGS)]
    # 59 recorded minutes at 10x: 354 s of replay, a row every 6 s, a line every 5 s
    # unless no row went out since the last one.
    assert 50 <= len(progress) <= 72
    assert "row 2 of 60" in progress[0] and "recorded 2015-02-04T17:01:00.000Z" in progress[0]
    assert "rows/s" in progress[-1]


# --- mapping, set, ids -----------------------------------------------------------------


def test_map_and_set_fill_the_contract(tmp_path: Path) -> None:
    path = write(tmp_path, OFFICE)
    sent, _, _ = run(path)
    first = sent[0][1]
    assert first.key == b"office-1"
    assert body(first) == {
        "reading_id": Recording.open(path).row_id(1),
        "device_id": "office-1",
        "room_id": "mons",
        "event_time": "2015-02-04T17:51:00.000Z",
        "temperature_c": 23.18,
        "humidity_pct": 27.272,
        "light_lux": 426.0,
        "co2_ppm": 721.25,
    }


def test_a_column_named_like_a_field_fills_it_and_empty_cells_are_absent(
    tmp_path: Path,
) -> None:
    text = "when,device_id,room_id,temperature_c,co2_ppm,notes\n"
    text += "2015-02-04T17:51:00+01:00,d1,r1,21.5,,open window\n"
    sent, _, _ = run(write(tmp_path, text), time_column="when", maps=(), sets=())
    message = sent[0][1]
    assert message.key == b"d1"
    assert body(message)["event_time"] == "2015-02-04T16:51:00.000Z"  # the offset applies
    assert "co2_ppm" not in body(message)
    assert "notes" not in body(message)


def test_a_time_zone_places_times_recorded_without_an_offset(tmp_path: Path) -> None:
    sent, _, _ = run(write(tmp_path, OFFICE), time_zone="Europe/Brussels")
    assert body(sent[0][1])["event_time"] == "2015-02-04T16:51:00.000Z"  # CET is UTC+1


def test_epoch_seconds_and_fractions(tmp_path: Path) -> None:
    text = "ts,Temperature\n1423072260.25,20\n1423072260.5,20\n"
    sent, _, _ = run(write(tmp_path, text), time_column="ts", maps=("Temperature=temperature_c",))
    assert [body(m)["event_time"] for _, m in sent] == [
        "2015-02-04T17:51:00.250Z",
        "2015-02-04T17:51:00.500Z",
    ]
    assert [t for t, _ in sent] == [0.0, 0.25]


def test_payments_rows_become_transactions(tmp_path: Path) -> None:
    text = "ts,id,card,merchant,mcc,amount,cur,country,lat,lon,channel\n"
    text += "2015-02-04T17:51:00Z,t1,c1,m1,5411,12.50,EUR,BE,50.45,3.95,pos\n"
    sent, _, _ = run(
        write(tmp_path, text),
        dom="payments",
        time_column="ts",
        id_column="id",
        maps=(
            "card=card_id",
            "merchant=merchant_id",
            "amount=amount",
            "cur=currency",
            "lat=lat",
            "lon=lon",
            "channel=channel",
            "country=country",
            "mcc=mcc",
        ),
        sets=(),
    )
    ((_, message),) = sent
    assert message.topic == PAYMENTS_TRANSACTIONS and message.key == b"c1"
    assert body(message)["transaction_id"] == "t1"
    assert body(message)["mcc"] == "5411"  # a text field stays text
    assert body(message)["amount"] == 12.5


def test_ids_are_stable_for_the_same_file_and_differ_for_another(tmp_path: Path) -> None:
    here = write(tmp_path, OFFICE)
    elsewhere = tmp_path / "copy" / "office.csv"
    elsewhere.parent.mkdir()
    shutil.copy(here, elsewhere)
    changed = write(tmp_path / "copy", OFFICE.replace("23.18", "23.19"), "other.csv")
    ids = [body(m)["reading_id"] for _, m in run(here)[0]]
    assert ids == [body(m)["reading_id"] for _, m in run(elsewhere)[0]]
    assert len(set(ids)) == 4 and ids[0].startswith("office-") and ids[0].endswith("-1")
    assert not set(ids) & {body(m)["reading_id"] for _, m in run(changed)[0]}


def test_id_column_gives_the_ids(tmp_path: Path) -> None:
    text = "time,n,Temperature\n2015-02-04 17:51:00,r-17,20\n"
    sent, _, _ = run(write(tmp_path, text), id_column="n", maps=("Temperature=temperature_c",))
    assert body(sent[0][1])["reading_id"] == "r-17"


# --- rows that do not fit: the dead-letter topic -----------------------------------------


BAD = """\
time,Temperature,Humidity,Light,CO2
2015-02-04 17:51:00,23.18,27.272,426.0,721.25
2015-02-04 17:52:00,999,27.2,426.0,714
yesterday,23.15,27.2,426.0,713.5
2015-02-04 17:54:00,23.15,27.2
2015-02-04 17:55:00,warm,27.2,426.0,708.25
2015-02-04 17:56:00,nan,27.2,426.0,708.25
2015-02-04 17:57:00,,,,

2015-02-04 17:58:00,23.1,27.2,426.0,708
"""


def test_rows_that_break_the_contract_go_to_the_dlq_with_their_reason(tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    sent, replayer, _ = run(path)
    dead = [m for _, m in sent if m.topic == IOT_DLQ]
    assert [m.topic for _, m in sent].count(IOT_READINGS) == 2
    assert [headers(m)["error"] for m in dead] == [
        "temperature_c: 999.0 must be within -40..125",
        "time: 'yesterday' in column 'time' is not a time (ISO 8601 such as 2015-02-04 "
        "17:51:00 or 2015-02-04T17:51:00Z, or epoch seconds)",
        "row: 3 cells where the header has 5",
        "temperature_c: expected `float | null`, got `str`",
        "temperature_c: expected `float | null`, got `str`",
        "value: a reading needs at least one of temperature_c, humidity_pct, light_lux, co2_ppm",
    ]
    # The row as it is in the file, and where it is (line 9 is blank).
    assert [m.value.decode() for m in dead] == BAD.splitlines()[2:8]
    assert [headers(m)["source.line"] for m in dead] == ["3", "4", "5", "6", "7", "8"]
    assert {headers(m)["source.file"] for m in dead} == {str(path.resolve())}
    assert dead[0].key == b"office-1" and dead[1].key is None
    assert sent[-1][1].row == 8 and body(sent[-1][1])["event_time"].startswith("2015-02-04T17:58")
    summary = replayer.summary(1.0, "exhausted")
    assert (summary.rows, summary.published, summary.dead_lettered) == (8, 2, 6)
    assert summary.dead_letters == {"temperature_c": 3, "time": 1, "row": 1, "value": 1}
    text = "\n".join(summary.lines())
    assert "read 8 rows, published 2 to iot.readings, 6 to iot.readings.dlq" in text
    assert "dead letters, temperature_c: 3 (e.g. temperature_c: 999.0 must be" in text
    assert "recorded 2015-02-04T17:51:00.000Z .. 2015-02-04T17:58:00.000Z (7 min)" in text


# --- errors: what is wrong and what to do ----------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"maps": ("Temp=temperature_c",)},
            "--map Temp=temperature_c: the file has no column 'Temp'; its columns are: time, "
            "Temperature, Humidity, Light, CO2",
        ),
        (
            {"maps": ("Temperature=temp",)},
            "--map Temperature=temp: the iot contract has no field 'temp'; its fields are: "
            "reading_id, device_id, room_id, temperature_c, humidity_pct, light_lux, co2_ppm",
        ),
        (
            {"maps": ("Temperature",)},
            "--map 'Temperature': write it as column=field, e.g. --map Temperature=temperature_c",
        ),
        (
            {"maps": ("time=event_time",)},
            "--map time=event_time: event_time comes from --time-column",
        ),
        (
            {"maps": ("Temperature=temperature_c", "Light=temperature_c")},
            "--map Light=temperature_c: temperature_c is already mapped from column 'Temperature'",
        ),
        ({"sets": ("floor=2",)}, "--set floor=2: the iot contract has no field 'floor'"),
        ({"sets": ("device_id",)}, "--set 'device_id': write it as field=value"),
        (
            {"sets": ("reading_id=x",)},
            "--set reading_id=x: every row needs its own reading_id; take it from a column "
            "with --id-column",
        ),
        (
            {"maps": ("CO2=co2_ppm",), "sets": ("co2_ppm=400",)},
            "--set co2_ppm=400: co2_ppm is already mapped from column 'CO2'",
        ),
        (
            {"time_column": "date"},
            "--time-column 'date': the file has no such column; its columns are: time, ",
        ),
        ({"id_column": "n"}, "--id-column n: the file has no such column"),
        ({"time_zone": "Mars/Olympus"}, "--time-zone 'Mars/Olympus': not a time zone name"),
    ],
)
def test_options_that_do_not_fit_say_what_to_write(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    options: dict[str, object] = {"maps": (), "sets": (), **kwargs}
    with pytest.raises(ReplayError) as caught:
        run(write(tmp_path, OFFICE), **options)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_an_unknown_domain_names_the_known_ones() -> None:
    with pytest.raises(ReplayError, match="unknown domain 'weather': replay into one of iot, "):
        domain("weather")


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (
            "04/02/2015 17:51,23.18,27.272,426.0,721.25",
            "row 1 (line 2): '04/02/2015 17:51' in column 'time' is not a time (ISO 8601",
        ),
        (
            "23.18,23.18,27.272,426.0,721.25",
            "row 1 (line 2): '23.18' in column 'time' is not a time: as epoch seconds it is "
            "outside 100,000,000 (1973)",
        ),
    ],
)
def test_a_first_row_without_a_time_stops_the_replay_with_its_row_number(
    tmp_path: Path, first: str, message: str
) -> None:
    text = OFFICE.splitlines()[0] + "\n" + first + "\n"
    with pytest.raises(ReplayError) as caught:
        run(write(tmp_path, text))
    assert message in str(caught.value)
    assert "give --time-column the column that holds the recorded time" in str(caught.value)


def test_a_speed_must_be_positive() -> None:
    first = datetime(2015, 2, 4, tzinfo=UTC)
    with pytest.raises(ReplayError, match=r"--speed 0: give a speed above 0 .* or --as-fast"):
        Schedule.start(first, started_at=WALL, speed=0.0, keep_time=False)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="no such file; give the path of a CSV recording"):
        Recording.open(tmp_path / "nope.csv")
    with pytest.raises(ReplayError, match="the file is empty; a recording starts with a header"):
        Recording.open(write(tmp_path, "\n\n"))


def test_the_command_line_reports_an_error_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, OFFICE)
    code = cli.main(["replay", "iot", str(path), "--time-column", "time", "--map", "T=x"])
    assert code == 2
    assert capsys.readouterr().err.startswith(
        "riverbed replay: --map T=x: the file has no column 'T'"
    )
    assert cli.main(["replay", "weather", str(path), "--time-column", "time"]) == 2
    assert "unknown domain 'weather'" in capsys.readouterr().err


def test_the_command_line_options() -> None:
    args = cli.build_parser().parse_args(
        [
            "replay", "iot", "f.csv", "--time-column", "t", "--map", "a=b", "--map", "c=d",
            "--set", "device_id=x", "--as-fast-as-possible", "--keep-time", "--id-column", "n",
        ]
    )  # fmt: skip
    options = options_from(args)
    assert options == ReplayOptions(
        domain="iot",
        path=Path("f.csv"),
        time_column="t",
        maps=("a=b", "c=d"),
        sets=("device_id=x",),
        id_column="n",
        speed=None,
        keep_time=True,
    )
    assert options_from(cli.build_parser().parse_args(["replay", "iot", "f", "--time-column", "t"]))
    with pytest.raises(SystemExit):  # one pace or the other
        cli.build_parser().parse_args(
            ["replay", "iot", "f", "--time-column", "t", "--speed", "2", "--as-fast-as-possible"]
        )


# --- the shipped recording -------------------------------------------------------------


def test_the_occupancy_recording_is_found_in_its_package() -> None:
    path = recording_path("occupancy")
    assert path.name == "occupancy.csv" and "river" in path.parts
    recording = Recording.open(path)
    assert recording.header == ("time", "V1", "V2", "V3", "V4")
    assert recording.rows == 509
    first = next(recording.rows_iter())
    assert parse_time(first.cells[0], UTC, "time") == datetime(2015, 2, 4, 17, 51, tzinfo=UTC)
    with pytest.raises(ReplayError, match="no shipped recording called 'x'; there are: occ"):
        recording_path("x")


def test_waiting_for_a_row_far_ahead_says_so_once_a_minute(tmp_path: Path) -> None:
    text = "time,Temperature\n2015-02-04 17:00:00,20\n2015-02-04 17:16:00,21\n"
    _, _, said = run(write(tmp_path, text), maps=("Temperature=temperature_c",), speed=1.0)
    waiting = [line for line in said if "due in" in line]
    assert 14 <= len(waiting) <= 16  # 16 minutes of waiting
    assert waiting[0].endswith("0.2 rows/s, row 2 due in 15 min")  # row 1 went out
    assert waiting[1].endswith("0.0 rows/s, row 2 due in 14 min")
