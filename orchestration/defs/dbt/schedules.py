"""The warehouse build as a job, and the schedule that runs it every five minutes."""

import dagster as dg

from orchestration.defs.dbt.assets import warehouse_models
from orchestration.lib.runs import WAREHOUSE_JOB, coalescing_schedule

build_warehouse = dg.define_asset_job(
    WAREHOUSE_JOB,
    selection=dg.AssetSelection.assets(warehouse_models),
    description="dbt build of every warehouse model and test, then the read-only copy.",
    # One step, which runs dbt as a process of its own: the default executor would start
    # another Python process for it, loading the code location again, on every build.
    executor_def=dg.in_process_executor,
)


warehouse_every_5_minutes = coalescing_schedule(
    name="warehouse_every_5_minutes",
    cron_schedule="*/5 * * * *",
    job=build_warehouse,
    description="A warehouse build every five minutes, skipped while one is queued or "
    "running (the lake_new_files sensor also asks for builds; one at a time is enough).",
)


defs = dg.Definitions(jobs=[build_warehouse], schedules=[warehouse_every_5_minutes])
