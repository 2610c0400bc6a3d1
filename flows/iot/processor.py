"""The per-Kafka-partition processor of the IoT flow: validation, resends, lateness,
anomaly rules, device windows, and the readings for the room join.

One :class:`DeviceProcessor` per partition of ``iot.readings`` (keyed by device, so a
device's readings arrive in offset order here). Pure Python and picklable: Bytewax
snapshots it, tests drive it directly. As in payments, "in the future" is judged
against the message's Kafka timestamp, so a replay gives the live run's verdicts.

The rules (each anomaly names its rule, measurement and value):

- ``range``: a measurement outside what a room can plausibly have
  (:data:`flows.iot.config.PLAUSIBLE`; the contract already refused what no sensor
  can report);
- ``baseline``: a measurement more than ``baseline_sigmas`` standard deviations (at
  least :data:`~flows.iot.config.SPREAD_FLOOR`) from its device's baseline for that
  hour of day (the stream-table join with
  ``iot.device_baselines``, :class:`flows.kit.keyed_table.KeyedTable`); a device, hour
  or measurement without a baseline of ``baseline_min_readings`` readings is not
  judged by it;
- ``flatline``: ``flatline_readings`` identical values of a measurement in a row (one
  anomaly per run); a light meter reading 0 lux is a dark room, not a stuck sensor;
- ``dropout``: a gap of more than ``dropout_us`` in a device's event times, found at
  the reading that ends it.

``flatline`` and ``dropout`` look at a device's readings in event-time order: a reading
older than its device's newest (clock skew, a late resend) is checked by the first two
rules only.

A device's state (its last reading ids, newest time and runs) is kept for as long as
the flow runs: a fleet's devices are a bounded set, and forgetting a quiet device would
hide exactly the long dropout that matters most.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque

from flows.iot.config import IotConfig
from flows.iot.records import (
    AnomalyRecord,
    DeviceWindowRow,
    IotOutput,
    ReadingColumns,
    RoomInput,
    RoomReading,
)
from flows.iot.windows import DeviceWindows
from flows.kit.keyed_table import KeyedTable
from flows.kit.records import Counts, DlqRecord, ProcessedBatch, SourceBatch
from flows.kit.validation import Validator
from riverbed.contracts.iot import (
    METRICS,
    Anomaly,
    DeviceBaseline,
    decode_baseline,
    decode_reading_at,
    encode,
)
from riverbed.contracts.wire import rfc3339

log = logging.getLogger("riverbed.flow.iot")

_HOUR_US = 3_600_000_000
_DAY_US = 24 * _HOUR_US

RANGE, BASELINE, FLATLINE, DROPOUT = "range", "baseline", "flatline", "dropout"
RULES = (RANGE, BASELINE, FLATLINE, DROPOUT)


def anomaly_id(rule: str, reading_id: str, metric: str | None) -> str:
    """Stable across replays: the same reading breaking the same rule is one anomaly."""
    return hashlib.sha1(f"{rule}|{reading_id}|{metric or ''}".encode()).hexdigest()[:24]


class DeviceState:
    """What the rules remember of one device."""

    __slots__ = ("ids", "last_us", "runs")

    def __init__(self) -> None:
        self.ids: deque[str] = deque()
        self.last_us: int | None = None  # newest event time
        # per measurement: (value, run length) of the current run of equal values
        self.runs: list[tuple[float | None, int]] = [(None, 0)] * len(METRICS)

    def __getstate__(self) -> tuple:
        return (list(self.ids), self.last_us, self.runs)

    def __setstate__(self, s: tuple) -> None:
        self.ids, self.last_us, self.runs = deque(s[0]), s[1], s[2]

    def seen(self, reading_id: str, memory: int) -> bool:
        """True if the reading was already seen (a resend); else remember it."""
        if reading_id in self.ids:
            return True
        self.ids.append(reading_id)
        if len(self.ids) > memory:
            self.ids.popleft()
        return False


class DeviceProcessor:
    def __init__(self, partition: int, config: IotConfig) -> None:
        self.partition = partition
        self.config = config
        self.devices: dict[str, DeviceState] = {}
        self.windows = DeviceWindows(config)
        self.baselines: KeyedTable[DeviceBaseline] = KeyedTable()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["config"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def configure(self, config: IotConfig) -> None:
        """Attach the config after unpickling (the window length stays the snapshot's)."""
        self.config = config
        self.windows.configure(config)

    def process(self, batch: SourceBatch, detected_us: int) -> IotOutput:
        cfg = self.config
        counts = Counts()
        rows = ReadingColumns()
        anomalies: list[AnomalyRecord] = []
        dlq: list[DlqRecord] = []
        joined: list[RoomReading] = []
        windows = self.windows
        if batch.table:
            self.baselines.read(batch.table, decode_baseline)
        validate = Validator(decode_reading_at, counts, dlq)
        for offset, key, value, ts_ms in batch.records:
            counts.processed += 1
            if self.baselines.due(ts_ms):
                self.baselines.apply_upto(ts_ms)
            checked = validate(offset, key, value, ts_ms)
            if checked is None:
                continue
            reading, event_us = checked
            device = self.devices.get(reading.device_id)
            if device is None:
                device = self.devices[reading.device_id] = DeviceState()
            if device.seen(reading.reading_id, cfg.resend_memory):
                counts.resent += 1
                continue
            counts.valid += 1
            values = (
                reading.temperature_c,
                reading.humidity_pct,
                reading.light_lux,
                reading.co2_ppm,
            )
            found = self._check(reading.device_id, device, event_us, values)
            for rule, metric, val, score, details in found:
                anomaly = Anomaly(
                    anomaly_id=anomaly_id(rule, reading.reading_id, metric),
                    rule=rule,
                    device_id=reading.device_id,
                    room_id=reading.room_id,
                    reading_id=reading.reading_id,
                    metric=metric,
                    value=val,
                    event_time=rfc3339(event_us),
                    detected_at=rfc3339(detected_us),
                    score=score,
                    details=details,
                )
                anomalies.append(
                    AnomalyRecord(
                        anomaly.anomaly_id,
                        rule,
                        reading.device_id,
                        reading.room_id,
                        reading.reading_id,
                        metric,
                        val,
                        event_us,
                        detected_us,
                        score,
                        details,
                        offset,
                        encode(anomaly),
                        ts_ms,
                    )
                )
                counts.alerts[rule] = counts.alerts.get(rule, 0) + 1
            late = windows.is_late(event_us)
            if late:
                counts.late += 1
            else:
                windows.add(event_us, reading.device_id, reading.room_id, values)
                windows.observe(event_us)
                if (
                    reading.co2_ppm is not None
                    or reading.light_lux is not None
                    or reading.humidity_pct is not None
                ):
                    joined.append(
                        RoomReading(
                            reading.room_id,
                            reading.reading_id,
                            reading.device_id,
                            event_us,
                            reading.co2_ppm,
                            reading.light_lux,
                            reading.humidity_pct,
                            self.partition,
                            offset,
                        )
                    )
            rows.reading_id.append(reading.reading_id)
            rows.device_id.append(reading.device_id)
            rows.room_id.append(reading.room_id)
            rows.event_us.append(event_us)
            rows.temperature_c.append(reading.temperature_c)
            rows.humidity_pct.append(reading.humidity_pct)
            rows.light_lux.append(reading.light_lux)
            rows.co2_ppm.append(reading.co2_ppm)
            rows.late.append(late)
            rows.offset.append(offset)
            rows.produced_ms.append(ts_ms)
        window_rows: list[DeviceWindowRow] = windows.close_ready()
        if batch.idle:
            window_rows += windows.flush_open()
        processed = ProcessedBatch(
            partition=batch.partition,
            next_offset=batch.next_offset,
            rows=rows,
            alerts=anomalies,
            dlq=dlq,
            counts=counts,
            caught_up=batch.caught_up,
            backlog=batch.backlog,
        )
        room = RoomInput(self.partition, joined, windows.watermark_us, batch.idle)
        return IotOutput(processed, window_rows, room)

    def _check(
        self,
        device_id: str,
        device: DeviceState,
        event_us: int,
        values: tuple[float | None, ...],
    ) -> list[tuple[str, str | None, float | None, float, str]]:
        """The rules a reading breaks: (rule, metric, value, score, details)."""
        cfg = self.config
        out: list[tuple[str, str | None, float | None, float, str]] = []
        baseline = self.baselines.get(device_id) if self.baselines else None
        hour = None
        if baseline is not None:
            hour_of_day = (event_us % _DAY_US) // _HOUR_US
            hour = next((h for h in baseline.hours if h.hour == hour_of_day), None)
        in_order = device.last_us is None or event_us > device.last_us
        for i, metric in enumerate(METRICS):
            v = values[i]
            if v is None:
                continue
            low, high = cfg.plausible[metric]
            if v < low or v > high:
                score = (low - v) if v < low else (v - high)
                out.append((RANGE, metric, v, score, f"plausible {low:g}..{high:g}"))
            elif hour is not None:
                b = getattr(hour, metric)
                if b is not None and b.std is not None and b.count >= cfg.baseline_min_readings:
                    spread = max(b.std, cfg.spread_floor[metric])
                    z = abs(v - b.mean) / spread
                    if z > cfg.baseline_sigmas:
                        details = f"hour {hour.hour}: mean {b.mean:.4g}, sd {b.std:.4g}"
                        out.append((BASELINE, metric, v, round(z, 3), details))
            if in_order:
                prev, run = device.runs[i]
                run = run + 1 if v == prev else 1
                device.runs[i] = (v, run)
                dark = metric == "light_lux" and v == 0
                if run == cfg.flatline_readings and not dark:
                    out.append((FLATLINE, metric, v, float(run), f"{run} identical readings"))
        if in_order:
            if device.last_us is not None and event_us - device.last_us > cfg.dropout_us:
                gap_s = (event_us - device.last_us) / 1e6
                out.append((DROPOUT, None, None, gap_s, f"no reading for {gap_s:.0f} s"))
            device.last_us = event_us
        return out
