"""Each batch feature after every warehouse build."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.features.schedules import publish_card_profiles, publish_device_baselines
from orchestration.lib.runs import in_flight_run_ids

# The warehouse's fact table: its materialization marks a finished build.
BUILT = dg.AssetKey(["warehouse", "fct_transactions"])


def after_build(name: str, job: dg.UnresolvedAssetJobDefinition, what: str) -> dg.SensorDefinition:
    """A sensor that runs ``job`` after every warehouse build, one run at a time: a build
    that finishes while ``job`` runs is covered by the next one."""

    @dg.asset_sensor(
        asset_key=BUILT,
        job=job,
        name=name,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"{what} after every warehouse build (one run at a time: a build "
        "that finishes while they are being published is covered by the next one).",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
    ) -> dg.RunRequest | dg.SkipReason:
        in_flight = in_flight_run_ids(context.instance, job.name)
        if in_flight:
            return dg.SkipReason(f"{job.name} already in flight: {', '.join(in_flight)}")
        return dg.RunRequest(run_key=f"after-build-{asset_event.run_id}")

    return _sensor


card_profiles_after_build = after_build(
    "card_profiles_after_build", publish_card_profiles, "Card profiles"
)
device_baselines_after_build = after_build(
    "device_baselines_after_build", publish_device_baselines, "Device baselines"
)

defs = dg.Definitions(sensors=[card_profiles_after_build, device_baselines_after_build])
