"""Lake upkeep on a schedule: compaction and vacuum of every lake table, hourly."""

import dagster as dg

from orchestration.defs.lake.assets import upkeep_assets
from orchestration.lib.runs import coalescing_schedule

UPKEEP_JOB = "lake_upkeep"

lake_upkeep_job = dg.define_asset_job(
    UPKEEP_JOB,
    selection=dg.AssetSelection.assets(*upkeep_assets),
    description="Compacts every lake Delta table, then vacuums the files compaction replaced "
    "once they are older than RIVERBED_LAKE_VACUUM_RETENTION_H.",
)


# Minute 17: away from the warehouse builds on the five-minute marks, so the two do not
# start reading the same tables in the same second.
lake_upkeep_hourly = coalescing_schedule(
    name="lake_upkeep_hourly",
    cron_schedule="17 * * * *",
    job=lake_upkeep_job,
    description="Hourly (at minute 17): compaction then vacuum of every lake Delta table. "
    "Skipped while the previous upkeep is still queued or running.",
)


defs = dg.Definitions(jobs=[lake_upkeep_job], schedules=[lake_upkeep_hourly])
