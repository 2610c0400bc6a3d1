"""Lake sensors: record committed files as materializations, and watch freshness."""

import json
import time

import dagster as dg
from confluent_kafka import KafkaException

from orchestration.lib.flows import FLOWS
from orchestration.lib.keys import lake_key
from orchestration.lib.manifest import dataset_commits
from orchestration.lib.settings import RiverbedResource
from riverbed.kafka_admin import high_watermarks

log = dg.get_dagster_logger("riverbed.sensors")
WAREHOUSE_JOB = "build_warehouse"


@dg.sensor(
    name="lake_new_files",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    job_name=WAREHOUSE_JOB,
    description="When flows commit new files to the lake: records them on the lake assets "
    "and builds the warehouse.",
)
def lake_new_files(context: dg.SensorEvaluationContext, riverbed: RiverbedResource):
    settings = riverbed.settings()
    seen = json.loads(context.cursor) if context.cursor else {}
    events, changed = [], []
    for spec in FLOWS.values():
        for dataset in spec.datasets:
            commits = dataset_commits(settings.lake_dir, spec.domain, dataset)
            name = f"{spec.domain}/{dataset}"
            if commits.files > seen.get(name, 0):
                changed.append(name)
                events.append(
                    dg.AssetMaterialization(
                        asset_key=lake_key(spec.domain, dataset),
                        metadata={
                            "files": commits.files,
                            "rows": commits.rows,
                            "new_files": commits.files - seen.get(name, 0),
                        },
                    )
                )
                seen[name] = commits.files
    if not changed:
        return dg.SkipReason("no new lake files")
    log.info("new lake files", extra={"datasets": ",".join(changed)})
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"lake-{json.dumps(seen, sort_keys=True)}")],
        asset_events=events,
        cursor=json.dumps(seen),
    )


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
    description="Fails when a flow's topic has new data but no lake file was committed for "
    "longer than RIVERBED_FRESHNESS_THRESHOLD_S.",
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
        committed = dataset_commits(settings.lake_dir, spec.domain, spec.datasets[0])
        since = pending_since(
            previous["pending_since"],
            total > previous["messages"],
            committed.last_committed_at,
            now,
        )
        state[spec.domain] = {"messages": total, "pending_since": since}
        if since is not None and now - since > settings.freshness_threshold_s:
            problems.append(
                f"{spec.domain}: {spec.source_topic} has new data but no lake file was "
                f"committed for {now - since:.0f} s"
            )
        else:
            notes.append(f"{spec.domain}: fresh")
    context.update_cursor(json.dumps(state))
    if problems:
        log.error("lake is stale", extra={"problems": "; ".join(problems)})
        raise Exception(
            "; ".join(problems) + ". Check the flow (the flows/<domain> asset and its log under "
            "RIVERBED_HOME/flows/<domain>/)."
        )
    return dg.SkipReason("; ".join(notes))


defs = dg.Definitions(sensors=[lake_new_files, lake_freshness])
