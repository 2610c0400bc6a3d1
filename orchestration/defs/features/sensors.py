"""Card profiles after every warehouse build."""

import dagster as dg

from orchestration.defs.features.schedules import PROFILES_JOB, publish_card_profiles
from orchestration.lib.runs import in_flight_run_ids

# The warehouse's fact table: its materialization marks a finished build.
BUILT = dg.AssetKey(["warehouse", "fct_transactions"])


@dg.asset_sensor(
    asset_key=BUILT,
    job=publish_card_profiles,
    name="card_profiles_after_build",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Card profiles after every warehouse build (one run at a time: a build "
    "that finishes while profiles are being published is covered by the next one).",
)
def card_profiles_after_build(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
) -> dg.RunRequest | dg.SkipReason:
    in_flight = in_flight_run_ids(context.instance, PROFILES_JOB)
    if in_flight:
        return dg.SkipReason(f"{PROFILES_JOB} already in flight: {', '.join(in_flight)}")
    return dg.RunRequest(run_key=f"after-build-{asset_event.run_id}")


defs = dg.Definitions(sensors=[card_profiles_after_build])
