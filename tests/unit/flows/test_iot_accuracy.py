"""How well the IoT rules find the faults the generator planted, with and without the
batch layer's device baselines; and how well the room join's occupancy matches the
rooms' true occupancy.

Day 1 of a generated building is the history the baselines are computed from
(``riverbed.baselines.baselines_from``, the batch layer's own polars code, over the
readings as the lake would hold them); day 2 is judged by the flow's processor, once
with no baseline table and once with the baselines published before it. The truth is
the generator's labels, never the rules' output. The figures are printed (``-s``) and
recorded in bench/RESULTS.md; the assertions are floors a regression would break.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime

import polars as pl

from flows.iot.config import IotConfig as FlowIotConfig
from flows.iot.processor import DeviceProcessor
from flows.iot.room_join import RoomJoin
from flows.kit.records import SourceBatch
from producers.iot import IotConfig, IotGenerator
from riverbed.baselines import baselines_from, to_contract
from riverbed.contracts.iot import METRICS, encode

DAY_S = 86_400
START = datetime(2026, 11, 2, tzinfo=UTC).timestamp()  # a Monday
PARTITIONS = 3


def building() -> tuple[list, list]:
    """Two days of four rooms with faults ten times as frequent as by default."""
    config = IotConfig(
        rooms=4,
        spike_share=0.005,
        flatline_per_device_day=2.0,
        dropout_per_device_day=2.0,
        invalid_share=0.0,
        duplicate_share=0.0,
    )
    day1, day2 = [], []
    for reading in IotGenerator(config, seed=11, start=START):
        if reading.true_time >= START + 2 * DAY_S:
            break
        (day1 if reading.true_time < START + DAY_S else day2).append(reading)
    return day1, day2


def lake_rows(readings: list) -> pl.LazyFrame:
    """Day 1 as the lake's readings table would hold it (no late rows: it is history)."""
    import json

    rows = []
    for offset, r in enumerate(readings):
        body = json.loads(r.value)
        rows.append(
            {
                "reading_id": r.reading_id,
                "device_id": r.device_id,
                "room_id": r.room_id,
                "event_time": datetime.fromtimestamp(r.event_time, UTC),
                **{m: body.get(m) for m in METRICS},
                "late": False,
                "_partition": 0,
                "_offset": offset,
            }
        )
    return pl.DataFrame(rows, infer_schema_length=None).lazy()


def judge(day2: list, table: list | None) -> tuple[dict, list]:
    """Run day 2 through one processor per partition (baselines, if any, in force from
    the start); the anomalies by rule as {(rule, reading_id)}, and the room states."""
    processors = {p: DeviceProcessor(p, FlowIotConfig()) for p in range(PARTITIONS)}
    join = RoomJoin.for_partitions(list(range(PARTITIONS)), FlowIotConfig())
    parts: dict[int, list] = defaultdict(list)
    ts_ms = int((START + 3 * DAY_S) * 1000)
    for r in day2:
        parts[zlib.crc32(r.key) % PARTITIONS].append(r)
    found: dict[str, set] = defaultdict(set)
    states = []
    size = 500
    longest = max(len(v) for v in parts.values())
    for start in range(0, longest + size, size):
        for p in range(PARTITIONS):
            chunk = parts[p][start : start + size]
            records = [(start + i, r.key, r.value, ts_ms) for i, r in enumerate(chunk)]
            last = start + size >= longest + size
            batch = SourceBatch(
                p,
                records,
                start + len(chunk),
                caught_up=last,
                idle=last,
                table=table if start == 0 else None,
            )
            out = processors[p].process(batch, 0)
            for a in out.batch.alerts:
                found[a.rule].add(a.reading_id)
            states += join.on_input(out.rooms)
    return found, states


SPIKES = ("spike_range", "spike_baseline")


def precision(found: set, right: Callable[[str], bool]) -> float:
    return round(sum(1 for x in found if right(x)) / len(found), 3) if found else 1.0


def recall(found: set, truth: set) -> float:
    return round(len(found & truth) / len(truth), 3) if truth else 1.0


def test_baselines_find_the_spikes_the_stream_alone_cannot() -> None:
    day1, day2 = building()
    base = baselines_from(lake_rows(day1), window_days=14, min_readings=30)
    computed_at = "2026-11-03T00:00:00Z"
    table = [
        (i, row["device_id"].encode(), encode(to_contract(row, computed_at, 14)), 0)
        for i, row in enumerate(base.iter_rows(named=True))
    ]
    assert len(table) == 12, "every device of the four rooms has a baseline"

    labels = {r.reading_id: (r.fault, r.fault_id) for r in day2}
    spikes = {rid for rid, (fault, _) in labels.items() if fault in SPIKES}
    episodes = {
        kind: {fid for fault, fid in labels.values() if fault == kind}
        for kind in ("flatline", "dropout")
    }
    assert len(spikes) > 50 and episodes["flatline"] and episodes["dropout"]

    without, _ = judge(day2, None)
    with_baselines, states = judge(day2, table)
    report = {}
    for name, found in (("stream only", without), ("with baselines", with_baselines)):
        flagged = found["range"] | found["baseline"]
        report[name] = {
            # by reading: a spike is one reading. A drifting reading found is right too.
            "spikes (range + baseline)": (
                precision(flagged, lambda rid: labels[rid][0] in (*SPIKES, "drift")),
                recall(flagged, spikes),
            ),
            # by episode: the rule fires once per run or gap, the label is on every reading
            **{
                kind: (
                    precision(found[kind], lambda rid, kind=kind: labels[rid][0] == kind),
                    recall({labels[rid][1] for rid in found[kind]}, episodes[kind]),
                )
                for kind in ("flatline", "dropout")
            },
        }
    print(report)
    alone = report["stream only"]["spikes (range + baseline)"]
    joined = report["with baselines"]["spikes (range + baseline)"]
    assert not without["baseline"], "no baseline table, no baseline rule"
    assert joined[1] >= alone[1] + 0.2, "the baselines find spikes the ranges miss"
    assert joined[0] >= 0.8 and joined[1] >= 0.8
    for rule in ("flatline", "dropout"):
        found_precision, found_recall = report["with baselines"][rule]
        assert found_precision >= 0.9 and found_recall >= 0.9, (rule, report)

    # Occupancy from the join against the rooms' true occupancy at the CO2 reading.
    truth = {r.reading_id: r.occupied for r in day2}
    decided = [(s.occupied, truth[s.reading_id]) for s in states if s.occupied is not None]
    agree = sum(1 for got, want in decided if got == want) / len(decided)
    print({"occupancy agreement": round(agree, 3), "room states": len(decided)})
    assert len(decided) > 0.9 * len(states)
    assert agree >= 0.9
