"""How ``riverbed produce iot`` places a run in time: it replays the recent past at the
rate asked for and reaches the present about when it ends, never sending a reading
before its time."""

from __future__ import annotations

import itertools

import pytest

from producers.iot import IotConfig, IotGenerator
from producers.iot.cli import DEFAULT_REPLAY_S, MAX_REPLAY_S, held_to_clock, replay_span

START = 1_772_409_600.0  # 2026-03-02 00:00 UTC


class FakeClock:
    """A wall clock that moves only when slept on."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds
        self.slept += seconds


def test_no_reading_is_let_out_before_its_time() -> None:
    clock = FakeClock(START + 60)  # a minute of past, then live
    readings = IotGenerator(IotConfig(), seed=1, start=START)
    let_out = []
    for reading in itertools.islice(held_to_clock(readings, clock, clock.sleep), 2000):
        assert reading.true_time <= clock.now
        let_out.append((reading, clock.now))
    # The past went out at once, the rest as its time came, not later (a resend
    # repeats an earlier reading: it goes out with the reading it follows).
    for reading, now in let_out:
        if not reading.resent:
            assert now == max(START + 60, reading.true_time)
    assert clock.slept == pytest.approx(let_out[-1][0].true_time - START - 60)


def test_a_run_starts_as_far_back_as_it_covers() -> None:
    config = IotConfig(rooms=8)  # 2.4 readings a second
    assert replay_span(config, 200, count=2400, duration=None) == pytest.approx(1000)
    # 60 s at 24 a second: 1,440 readings, ten minutes of the building's time.
    assert replay_span(config, 24, count=None, duration=60) == pytest.approx(600)
    assert replay_span(config, 0, count=None, duration=60) == DEFAULT_REPLAY_S
    assert replay_span(config, 200, count=None, duration=None) == DEFAULT_REPLAY_S
    assert replay_span(config, 200, count=10**9, duration=None) == MAX_REPLAY_S
