"""Event times in µs: the remembered-second shortcut gives what the strict parser gives
(RFC 3339 regex, then datetime), and rejects what it rejects."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riverbed.contracts import wire
from riverbed.contracts.wire import InvalidEvent, event_time_us, micros, parse_event_time

MOMENTS = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


def strict(value: str) -> int:
    return micros(parse_event_time(value))


@settings(max_examples=300, database=None, derandomize=True)
@given(moment=MOMENTS, digits=st.sampled_from([3, 6]))
def test_a_remembered_second_gives_what_the_parser_gives(moment: datetime, digits: int) -> None:
    text = moment.isoformat(timespec="milliseconds" if digits == 3 else "microseconds")
    value = text.replace("+00:00", "Z")
    first = event_time_us(value)  # parsed, and its second remembered
    later = value[:20] + "9" * digits + "Z"  # the same second, from the shortcut
    assert first == strict(value)
    assert value[:19] in wire._SECONDS
    assert event_time_us(later) == strict(later)


@pytest.mark.parametrize(
    "suffix",
    [
        ".1\u06653Z",  # an Arabic-Indic digit: \d accepts it, RFC 3339 does not
        ".12Z",  # two digits: not a shortcut length, so the parser decides
        ".123z",  # lower-case z is RFC 3339, left to the parser
        ".1234567Z",
        ".12 Z",
        ".-12Z",
    ],
)
def test_the_shortcut_rejects_or_defers_what_is_not_digits(suffix: str) -> None:
    second = "2026-11-30T12:00:00"
    assert event_time_us(second + ".000Z") == strict(second + ".000Z")
    value = second + suffix
    try:
        expected: int | type[InvalidEvent] = strict(value)
    except InvalidEvent:
        expected = InvalidEvent
    if expected is InvalidEvent:
        with pytest.raises(InvalidEvent):
            event_time_us(value)
    else:
        assert event_time_us(value) == expected


def test_an_offset_is_not_a_shortcut() -> None:
    value = "2026-11-30T12:00:00.000+01:00"
    assert event_time_us(value) == strict(value)
    assert event_time_us(value) == micros(datetime(2026, 11, 30, 11, tzinfo=UTC))
    assert micros(datetime(2026, 11, 30, 11, tzinfo=UTC) + timedelta(hours=1)) == event_time_us(
        "2026-11-30T12:00:00.000Z"
    )
