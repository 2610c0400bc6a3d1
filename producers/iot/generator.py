"""Realistic sensor readings for ``iot.readings``, with labelled faults and noise.

A seeded :class:`IotGenerator` simulates a building (:mod:`.building`): every device
reports every ``interval_s`` of event time, within ±``jitter_s`` of its own slot, and
what it reads follows its room's occupancy (:mod:`.occupancy`) through the room's
physics (:mod:`.physics`), plus sensor noise. Faults (:mod:`.faults`) are injected
on single devices, malformed messages and resends are mixed in, and every message
carries its ground truth (:class:`~producers.iot.events.GeneratedReading`) beside the
bytes.

Only the generator's own clock is used: the same seed and start give the same
bytes and labels, whoever iterates and whenever. Readings come out in the order
devices send them (``true_time``); a skewed device's ``event_time`` is off by its
skew, and a resend repeats an earlier reading whenever it comes.

How the labels stay the truth:

* at most one episode (drift, flat line, dropout, skewed clock) runs on a device at
  a time, and no spike lands on a device in an episode, nor on the reading that ends
  a dropout (that reading carries the dropout's label);
* normal readings are noisy at the precision they are sent with (hundredths; CO2 in
  whole ppm), so no device repeats a value for minutes unless it is stuck, and the
  dark reads a little light, not a flat 0;
* malformed messages and resends are extra messages: they never take a device's
  slot, so a device's valid readings are a gap only where it dropped out.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Iterator
from typing import Final

from msgspec.structs import replace as with_changes

from producers.iot.building import (
    DAY_S,
    Device,
    IotConfig,
    Room,
    build_devices,
    build_rooms,
)
from producers.iot.events import (
    CLOCK_SKEW,
    DRIFT,
    DROPOUT,
    EPISODE_KINDS,
    FLATLINE,
    SPIKE_BASELINE,
    SPIKE_RANGE,
    FaultEpisode,
    GeneratedReading,
)
from producers.iot.faults import DURATION_S, drift_offset, skew_s, spike_value, within_range
from producers.iot.occupancy import Occupancy
from producers.iot.physics import RoomAir
from producers.iot.wire import INVALID_KINDS, corrupt, encode, reading_fields

# A resend repeats one of about the last 20 readings of its device (the flow
# recognises a resend among a device's last 64).
_RESENDS_FROM_LAST: Final = 20
# Sensor noise (one standard deviation) and the decimals a device sends.
_NOISE: Final[dict[str, float]] = {
    "temperature_c": 0.04,
    "humidity_pct": 0.25,
    "light_lux": 0.3,
    "co2_ppm": 8.0,
}
_DECIMALS: Final[dict[str, int]] = {
    "temperature_c": 2,
    "humidity_pct": 2,
    "light_lux": 2,
    "co2_ppm": 0,
}
_LIGHT_NOISE_SHARE: Final = 0.01  # a lit room's lux varies by about 1 %


class IotGenerator:
    """An endless, deterministic stream of :class:`GeneratedReading`.

    ``start`` is the first moment of event time (seconds since the epoch). The
    ground truth of occupancy is also there to ask for any moment: :meth:`people`,
    :meth:`occupied`; every episode started so far is in :attr:`episodes`.
    """

    def __init__(self, config: IotConfig, *, seed: int, start: float) -> None:
        self.config = config
        self.seed = seed
        self.start = float(start)
        self._rng = random.Random(seed)
        self.rooms: tuple[Room, ...] = build_rooms(self._rng, config)
        self.devices: tuple[Device, ...] = build_devices(self.rooms)
        self._occupancy = Occupancy(self.rooms, seed)
        self._air = [RoomAir(room, self._occupancy, seed, self.start) for room in self.rooms]
        self._room_index = {room.room_id: room.index for room in self.rooms}
        # Ids differ between runs with other seeds or start times and repeat exactly
        # for the same ones (a reproduced run).
        id_rng = random.Random(f"{seed}:{round(self.start * 1000)}")
        self._id_prefix = f"rd-{id_rng.getrandbits(40):010x}-"
        self._next_id = 0
        self._next_fault = 0
        self.episodes: list[FaultEpisode] = []
        self._clock = self.start
        n = len(self.devices)
        self._active: list[FaultEpisode | None] = [None] * n
        self._stuck: list[dict[str, float] | None] = [None] * n
        self._ended_dropout: list[FaultEpisode | None] = [None] * n
        self._rates = {
            DRIFT: config.drift_per_device_day / DAY_S,
            FLATLINE: config.flatline_per_device_day / DAY_S,
            DROPOUT: config.dropout_per_device_day / DAY_S,
            CLOCK_SKEW: config.skew_per_device_day / DAY_S,
        }
        self._next_episode = [
            {kind: self._episode_due(kind, self.start) for kind in EPISODE_KINDS} for _ in range(n)
        ]
        self._recent: deque[GeneratedReading] = deque(maxlen=_RESENDS_FROM_LAST * n)
        # Malformed messages and resends are drawn per reading, sized so that they
        # come out at their configured shares of everything published.
        readings_share = 1.0 - config.invalid_share - config.duplicate_share
        self._p_invalid = config.invalid_share / readings_share
        self._p_resend = config.duplicate_share / readings_share

    # -- public ------------------------------------------------------------------------

    @property
    def clock(self) -> float:
        """The true time of the latest reading: no message was sent later than it."""
        return self._clock

    def __iter__(self) -> Iterator[GeneratedReading]:
        return self._messages()

    def pairs(self) -> Iterator[tuple[bytes, bytes]]:
        """Only the (key, value) of each message: what a producer publishes."""
        for message in self._messages():
            yield message.key, message.value

    def people(self, room_id: str, t: float) -> int:
        """How many people are truly in ``room_id`` at ``t`` (any moment, past or future)."""
        return self._occupancy.people(self._room_index[room_id], t)

    def occupied(self, room_id: str, t: float) -> bool:
        return self.people(room_id, t) > 0

    # -- the stream --------------------------------------------------------------------

    def _messages(self) -> Iterator[GeneratedReading]:
        cfg, rng = self.config, self._rng
        interval, jitter = cfg.interval_s, cfg.jitter_s
        # Each device's slots are `interval` apart from its own phase.
        phases = [self.start + rng.uniform(jitter, interval - jitter) for _ in self.devices]
        # (time of the device's next reading, device index, its slot number)
        due = [(phase + rng.uniform(-jitter, jitter), d, 0) for d, phase in enumerate(phases)]
        heapq.heapify(due)
        while True:
            t, d, slot = due[0]
            nominal = phases[d] + (slot + 1) * interval
            heapq.heapreplace(due, (nominal + rng.uniform(-jitter, jitter), d, slot + 1))
            self._clock = t
            made = self._reading(self.devices[d], t)
            if made is None:
                continue
            reading, fields = made
            yield reading
            self._recent.append(reading)
            if rng.random() < self._p_invalid:
                yield self._malformed(reading, fields)
            if rng.random() < self._p_resend:
                copy = self._recent[rng.getrandbits(16) % len(self._recent)]
                yield with_changes(copy, resent=True)

    def _reading(
        self, device: Device, t: float
    ) -> tuple[GeneratedReading, dict[str, object]] | None:
        """The device's reading at ``t``, faults applied, and its fields; None while it
        is silent."""
        room = device.room
        air = self._air[room.index]
        air.advance(t)
        d = device.index
        episode = self._current_episode(d, t)
        if episode is not None and episode.kind == DROPOUT:
            return None
        clean = {metric: self._measure(air, metric) for metric in device.metrics}
        values = dict(clean)
        fault: str | None = None
        fault_id: int | None = None
        metric: str | None = None
        event_time = t
        ended = self._ended_dropout[d]
        if ended is not None:
            self._ended_dropout[d] = None
            fault, fault_id = DROPOUT, ended.fault_id
        elif episode is not None:
            fault, fault_id = episode.kind, episode.fault_id
            if episode.kind == FLATLINE:
                stuck = self._stuck[d]
                if stuck is None:
                    stuck = self._stuck[d] = values
                values = dict(stuck)
            elif episode.kind == DRIFT:
                metric = episode.metric
                assert metric is not None
                grown = (t - episode.start) / (episode.end - episode.start)
                drifted = within_range(metric, clean[metric] + episode.magnitude * grown)
                values[metric] = round(drifted, _DECIMALS[metric])
            else:  # CLOCK_SKEW
                event_time = t + episode.magnitude
        elif self._rng.random() < self.config.spike_share:
            fault = SPIKE_RANGE if self._rng.random() < 0.5 else SPIKE_BASELINE
            fault_id = self._new_fault_id()
            metric = self._rng.choice(device.metrics)
            values[metric] = spike_value(self._rng, fault, metric, clean[metric])
        reading_id = self._new_reading_id()
        fields = reading_fields(reading_id, device.device_id, room.room_id, event_time, values)
        people = self._occupancy.people(room.index, t)
        reading = GeneratedReading(
            key=device.key,
            value=encode(fields),
            reading_id=reading_id,
            device_id=device.device_id,
            room_id=room.room_id,
            true_time=t,
            event_time=event_time,
            occupied=people > 0,
            people=people,
            fault=fault,
            fault_id=fault_id,
            metric=metric,
            clean=clean[metric] if metric is not None else None,
        )
        return reading, fields

    def _measure(self, air: RoomAir, metric: str) -> float:
        gauss = self._rng.gauss
        if metric == "temperature_c":
            value = air.temperature_c() + gauss(0.0, _NOISE[metric])
        elif metric == "humidity_pct":
            value = min(100.0, max(0.0, air.humidity_pct() + gauss(0.0, _NOISE[metric])))
        elif metric == "light_lux":
            lux = air.light_lux()
            value = abs(lux + gauss(0.0, _NOISE[metric] + _LIGHT_NOISE_SHARE * lux))
        else:
            value = max(0.0, air.co2_ppm() + gauss(0.0, _NOISE[metric]))
        return round(value, _DECIMALS[metric])

    def _malformed(self, reading: GeneratedReading, fields: dict[str, object]) -> GeneratedReading:
        """A garbled message from the same device at the same moment, under its own id."""
        rng = self._rng
        kind = INVALID_KINDS[int(rng.random() * len(INVALID_KINDS))]
        reading_id = self._new_reading_id()
        value = corrupt(kind, {**fields, "reading_id": reading_id}, rng, reading.true_time)
        return GeneratedReading(
            key=reading.key,
            value=value,
            reading_id=reading_id,
            device_id=reading.device_id,
            room_id=reading.room_id,
            true_time=reading.true_time,
            event_time=reading.event_time,
            occupied=reading.occupied,
            people=reading.people,
            invalid_reason=kind,
        )

    # -- episodes ----------------------------------------------------------------------

    def _current_episode(self, d: int, t: float) -> FaultEpisode | None:
        """The episode device ``d`` is in at ``t``: ending the one that is over, starting
        one that is due (never on the reading that ends a dropout)."""
        episode = self._active[d]
        if episode is not None and t >= episode.end:
            if episode.kind == DROPOUT:
                self._ended_dropout[d] = episode  # the reading that ends it is labelled
            self._active[d] = episode = None
            self._stuck[d] = None
        if episode is None and self._ended_dropout[d] is None:
            due = self._next_episode[d]
            kind = min(due, key=due.__getitem__)
            if due[kind] <= t:
                episode = self._start_episode(self.devices[d], kind, t)
                self._active[d] = episode
                for other in due:
                    due[other] = max(due[other], episode.end)
                due[kind] = self._episode_due(kind, episode.end)
        return episode

    def _start_episode(self, device: Device, kind: str, t: float) -> FaultEpisode:
        rng = self._rng
        metric: str | None = None
        magnitude = 0.0
        if kind == DRIFT:
            metric = rng.choice(device.metrics)
            magnitude = drift_offset(rng, metric)
        elif kind == CLOCK_SKEW:
            magnitude = skew_s(rng)
        episode = FaultEpisode(
            fault_id=self._new_fault_id(),
            kind=kind,
            device_id=device.device_id,
            room_id=device.room.room_id,
            start=t,
            end=t + rng.uniform(*DURATION_S[kind]),
            metric=metric,
            magnitude=magnitude,
        )
        self.episodes.append(episode)
        return episode

    def _episode_due(self, kind: str, after: float) -> float:
        rate = self._rates[kind]
        return after + self._rng.expovariate(rate) if rate > 0 else float("inf")

    def _new_fault_id(self) -> int:
        self._next_fault += 1
        return self._next_fault - 1

    def _new_reading_id(self) -> str:
        self._next_id += 1
        return f"{self._id_prefix}{self._next_id - 1:x}"
