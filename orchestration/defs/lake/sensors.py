"""Lake sensors: record new Delta table versions as materializations, build the warehouse
from them (one build at a time), and watch that the flows keep committing."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import dagster as dg
from confluent_kafka import KafkaException

from orchestration.lib import lake_tables
from orchestration.lib.flows import FLOWS
from orchestration.lib.keys import lake_key
from orchestration.lib.runs import WAREHOUSE_JOB, in_flight_run_ids
from orchestration.lib.settings import RiverbedResource
from riverbed import lake
from riverbed.kafka_admin import high_watermarks

log = dg.get_dagster_logger("riverbed.sensors")


# ---------------------------------------------------------------------------------
# lake_new_files: new table versions → materializations → one warehouse build
# ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LakeCursor:
    """What the sensor has recorded, and whether a build of it is still owed.

    ``versions`` advances as soon as a version is recorded on its asset, so each version
    is recorded once; ``build_pending`` stays set while a build is in flight, so the
    first tick after that build finishes asks for the next one.
    """

    versions: dict[str, int] = field(default_factory=dict)
    build_pending: bool = False

    @classmethod
    def parse(cls, raw: str | None) -> LakeCursor:
        data = json.loads(raw) if raw else {}
        if not isinstance(data.get("versions"), dict):
            return cls()  # empty, or the first version's cursor (file counts): start over
        return cls(dict(data["versions"]), bool(data.get("build_pending", False)))

    def dump(self) -> str:
        return json.dumps(
            {"versions": self.versions, "build_pending": self.build_pending}, sort_keys=True
        )


@dataclass(frozen=True)
class LakeTick:
    changed: dict[str, lake.TableSummary]  # tables with a version the cursor has not seen
    request_build: bool
    cursor: LakeCursor


def plan_lake_tick(
    cursor: LakeCursor,
    tables: dict[str, lake.TableSummary | None],
    build_in_flight: bool,
) -> LakeTick:
    """Which tables changed, and whether to ask for a warehouse build now.

    Any new version counts (an append, a merge, a compaction): the version is what a
    reader sees, and a build after a compaction is harmless. A build is asked for only
    when none is queued or running; otherwise it stays owed.
    """
    changed = {
        name: summary
        for name, summary in tables.items()
        if summary is not None and summary.version > cursor.versions.get(name, -1)
    }
    versions = {**cursor.versions, **{name: s.version for name, s in changed.items()}}
    owed = cursor.build_pending or bool(changed)
    request = owed and not build_in_flight
    return LakeTick(changed, request, LakeCursor(versions, build_pending=owed and not request))


def _materialization(
    name: str, summary: lake.TableSummary, previous: int | None
) -> dg.AssetMaterialization:
    domain, dataset = name.split("/")
    metadata: dict[str, dg.RawMetadataValue] = {
        "version": summary.version,
        "files": summary.files,
        "rows": summary.rows,
        "new_versions": summary.version - (previous if previous is not None else -1),
        "path": f"lake/{domain}/{dataset}",
    }
    if summary.last_commit_at is not None:
        metadata["last_commit_at"] = dg.MetadataValue.timestamp(summary.last_commit_at)
    return dg.AssetMaterialization(asset_key=lake_key(domain, dataset), metadata=metadata)


# Every 5 s: a tick only reads each table's log tail, and the wait for it is part of
# every event's way into the warehouse (bench/platform_bench.py measures that way).
@dg.sensor(
    name="lake_new_files",
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    job_name=WAREHOUSE_JOB,
    description="When a lake Delta table gets a new version (the flow committed, or upkeep "
    "compacted it): records it on the lake asset (version, files, rows) and asks for a "
    "warehouse build, never while one is queued or running: then the first tick after it "
    "finishes asks.",
)
def lake_new_files(context: dg.SensorEvaluationContext, riverbed: RiverbedResource):
    settings = riverbed.settings()
    cursor = LakeCursor.parse(context.cursor)
    in_flight = in_flight_run_ids(context.instance, WAREHOUSE_JOB)
    tick = plan_lake_tick(cursor, lake_tables.summaries(settings.lake_dir), bool(in_flight))
    events = [
        _materialization(name, summary, cursor.versions.get(name))
        for name, summary in tick.changed.items()
    ]
    if tick.changed:
        log.info("new lake table versions", extra={"tables": ",".join(tick.changed)})
    if tick.request_build:
        versions = json.dumps(tick.cursor.versions, sort_keys=True)
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"lake-{versions}")],
            asset_events=events,
            cursor=tick.cursor.dump(),
        )
    if tick.cursor.build_pending:
        why = f"a warehouse build is in flight ({', '.join(in_flight)}); the next one waits"
    else:
        why = "no new lake table versions"
    return dg.SensorResult(skip_reason=why, asset_events=events, cursor=tick.cursor.dump())


# ---------------------------------------------------------------------------------
# lake_freshness: the topic grows but the lake does not
# ---------------------------------------------------------------------------------


def pending_since(
    previous: float | None, topic_grew: bool, last_commit: float | None, now: float
) -> float | None:
    """Since when the topic has held data the lake has not caught up with (None: caught up)."""
    if topic_grew and previous is None:
        previous = now
    if previous is not None and last_commit is not None and last_commit >= previous:
        return None
    return previous


@dg.sensor(
    name="lake_freshness",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Fails when a flow's topic has new data but its lake Delta table got no new "
    "commit for longer than RIVERBED_FRESHNESS_THRESHOLD_S.",
)
def lake_freshness(context: dg.SensorEvaluationContext, riverbed: RiverbedResource):
    settings = riverbed.settings()
    state = json.loads(context.cursor) if context.cursor else {}
    now = time.time()
    problems, notes = [], []
    for spec in FLOWS.values():
        try:
            watermarks = high_watermarks(settings, spec.source_topic)
        except KafkaException as exc:
            return dg.SkipReason(f"Kafka unreachable, freshness unknown: {exc.args[0]}")
        total = sum(high for _low, high in watermarks.values())
        previous = state.get(spec.domain, {"messages": 0, "pending_since": None})
        # The table the source topic lands in first. An upkeep compaction is a commit
        # too and may reset the clock once, delaying a report by one threshold at most:
        # once it has merged a stalled flow's last files it has nothing left to commit.
        table = lake.summary(settings.lake_dir, spec.datasets[0], spec.domain)
        since = pending_since(
            previous["pending_since"],
            total > previous["messages"],
            table.last_commit_at if table else None,
            now,
        )
        state[spec.domain] = {"messages": total, "pending_since": since}
        if since is not None and now - since > settings.freshness_threshold_s:
            problems.append(
                f"{spec.domain}: {spec.source_topic} has new data but the lake table "
                f"{spec.domain}/{spec.datasets[0]} got no commit for {now - since:.0f} s"
            )
        else:
            notes.append(f"{spec.domain}: fresh (table version {table.version if table else '-'})")
    context.update_cursor(json.dumps(state))
    if problems:
        log.error("lake is stale", extra={"problems": "; ".join(problems)})
        raise Exception(
            "; ".join(problems) + ". Check the flow (the flows/<domain> asset and its log under "
            "RIVERBED_HOME/flows/<domain>/)."
        )
    return dg.SkipReason("; ".join(notes))


defs = dg.Definitions(sensors=[lake_new_files, lake_freshness])
