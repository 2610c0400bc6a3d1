"""The warehouse build as a job, and the schedule that runs it every five minutes."""

import dagster as dg

from orchestration.defs.dbt.assets import warehouse_models
from orchestration.lib.runs import WAREHOUSE_JOB, coalescing_schedule, in_process_job

build_warehouse = in_process_job(
    WAREHOUSE_JOB,
    dg.AssetSelection.assets(warehouse_models),
    "dbt build of every warehouse model and test, then the read-only copy.",
)

warehouse_every_5_minutes = coalescing_schedule(
    name="warehouse_every_5_minutes",
    cron_schedule="*/5 * * * *",
    job=build_warehouse,
    description="A warehouse build every five minutes, skipped while one is queued or "
    "running (the lake_new_files sensor also asks for builds; one at a time is enough).",
)


defs = dg.Definitions(jobs=[build_warehouse], schedules=[warehouse_every_5_minutes])
