"""`riverbed produce iot`: generate sensor readings and publish them to Kafka.

A building sends ``IotConfig.live_rate`` readings a second (2.4 for 8 rooms), far
fewer than a producer's usual rate. So a run at a higher rate replays the recent
past: its event time starts far enough back that, at that rate, it reaches the
present about when the run ends, and from there the readings are sent as their
time comes, never ahead of it (the contract rejects readings from the future). A
run with neither a count nor a duration replays the last day, then goes on live.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from producers.iot.building import IotConfig
from producers.iot.events import GeneratedReading
from producers.iot.generator import IotGenerator
from producers.kafka_loop import ProduceSummary, ProgressCallback
from producers.runner import publish_generated
from riverbed.settings import Settings
from riverbed.topics import IOT_READINGS

log = logging.getLogger("riverbed.producer")

DEFAULT_REPLAY_S: Final = 86_400.0  # an open-ended or as-fast-as-possible run's past
MAX_REPLAY_S: Final = 6 * 86_400.0  # inside the topic's seven days of retention


def produce_iot(
    settings: Settings,
    *,
    rate: float | None,
    count: int | None,
    duration: float | None,
    seed: int | None,
    rooms: int | None = None,
    topic: str = IOT_READINGS,
    progress: ProgressCallback | None = None,
    producer_overrides: dict[str, str] | None = None,
    serve_metrics: bool = False,
) -> ProduceSummary:
    """Generate readings and publish them to Kafka until ``count`` or ``duration``.

    ``rate`` None takes ``settings.producer_rate``; 0 means as fast as possible.
    ``rooms`` None takes the default (8). ``seed`` None draws one; it is in the
    summary so a run can be reproduced (with the same start: see the module's
    docstring for how the start is chosen). ``serve_metrics``: serve
    :mod:`producers.metrics` to Prometheus while it runs (``riverbed produce`` does).
    """
    if seed is None:
        seed = secrets.randbits(32)
    events_per_s = settings.producer_rate if rate is None else rate
    config = IotConfig.from_settings(settings, rooms=rooms)
    now = time.time()
    past = replay_span(config, events_per_s, count=count, duration=duration)
    generator = IotGenerator(config, seed=seed, start=now - past)
    log.info(
        "producing readings of %d rooms to %s with seed %d, from %.0f s ago",
        config.rooms,
        topic,
        seed,
        past,
    )
    return publish_generated(
        settings,
        held_to_clock(generator, time.time),
        domain="iot",
        topic=topic,
        seed=seed,
        rate=events_per_s,
        count=count,
        duration=duration,
        progress=progress,
        producer_overrides=producer_overrides,
        serve_metrics=serve_metrics,
    )


def replay_span(
    config: IotConfig, rate: float, *, count: int | None, duration: float | None
) -> float:
    """How far back in event time a run starts, so that it reaches the present about
    when it ends: the event time its messages cover at ``rate`` (0: as fast as
    possible), or a day when that is not known; at most six days."""
    if count is not None:
        span = count / config.live_rate
    elif duration is not None and rate > 0:
        span = duration * rate / config.live_rate
    else:
        span = DEFAULT_REPLAY_S
    if span > MAX_REPLAY_S:
        log.warning(
            "the run would replay %.1f days of readings; it starts %.0f days back and then "
            "goes live at %.1f readings/s",
            span / 86_400,
            MAX_REPLAY_S / 86_400,
            config.live_rate,
        )
    return min(span, MAX_REPLAY_S)


def held_to_clock(
    readings: Iterable[GeneratedReading],
    clock: Callable[[], float],
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[GeneratedReading]:
    """``readings``, each held back until ``clock`` reaches the moment it was sent: a
    replay runs as fast as it is asked, and the present never faster than real time.

    While a reading is held the producer loop waits with it, so a stop request (or the
    end of a duration) is seen after at most one gap between readings: 0.4 s for 8
    rooms, an interval divided by the devices in general.
    """
    for reading in readings:
        wait = reading.true_time - clock()
        if wait > 0:
            sleep(wait)
        yield reading
