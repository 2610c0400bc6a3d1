"""Each batch feature as a job, hourly (and after every build: sensors.py)."""

import dagster as dg

from orchestration.defs.features.assets import card_profiles, device_baselines
from orchestration.lib.runs import coalescing_schedule, in_process_job

PROFILES_JOB = "publish_card_profiles"
BASELINES_JOB = "publish_device_baselines"

publish_card_profiles = in_process_job(
    PROFILES_JOB,
    dg.AssetSelection.assets(card_profiles),
    "Computes the card profiles from the lake and publishes them.",
)

publish_device_baselines = in_process_job(
    BASELINES_JOB,
    dg.AssetSelection.assets(device_baselines),
    "Computes the device baselines from the lake and publishes them.",
)

card_profiles_hourly = coalescing_schedule(
    name="card_profiles_hourly",
    cron_schedule="41 * * * *",
    job=publish_card_profiles,
    description="Hourly (at minute 41, away from the builds and the upkeep): card "
    "profiles. Skipped while the previous run is still queued or running.",
)

device_baselines_hourly = coalescing_schedule(
    name="device_baselines_hourly",
    cron_schedule="47 * * * *",
    job=publish_device_baselines,
    description="Hourly (at minute 47, away from the builds, the upkeep and the card "
    "profiles): device baselines. Skipped while the previous run is still queued or running.",
)


defs = dg.Definitions(
    jobs=[publish_card_profiles, publish_device_baselines],
    schedules=[card_profiles_hourly, device_baselines_hourly],
)
