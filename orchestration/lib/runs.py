"""Which runs of a job are still in flight, so sensors and schedules can coalesce."""

from __future__ import annotations

import dagster as dg

# The dbt build's job: named here because the lake sensor (defs/lake) requests it and
# the warehouse schedule (defs/dbt) runs it.
WAREHOUSE_JOB = "build_warehouse"

# Every status in which a run may yet start or is still working: a sensor or schedule
# that asked for another run now would only queue a duplicate behind it. CANCELING is
# in flight too: its process may still be writing until the cancel lands.
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def in_flight_run_ids(instance: dg.DagsterInstance, job_name: str) -> list[str]:
    """Ids of the runs of ``job_name`` that are queued, starting or running."""
    runs = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=5
    )
    return [record.dagster_run.run_id for record in runs]


def coalescing_schedule(
    *, name: str, cron_schedule: str, job: dg.UnresolvedAssetJobDefinition, description: str
) -> dg.ScheduleDefinition:
    """A schedule of ``job`` that skips its tick while a run of the job is in flight, so
    runs never queue up behind one another."""

    @dg.schedule(
        name=name,
        cron_schedule=cron_schedule,
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        in_flight = in_flight_run_ids(context.instance, job.name)
        if in_flight:
            return dg.SkipReason(f"{job.name} already in flight: {', '.join(in_flight)}")
        return dg.RunRequest()

    return _schedule


def in_process_job(
    name: str, selection: dg.AssetSelection, description: str
) -> dg.UnresolvedAssetJobDefinition:
    """An asset job whose steps run in the run's own process.

    For jobs of one step that does its work in a process of its own (dbt) or in a few
    seconds: the default executor would start another Python process per step, loading
    the code location again, on every run.
    """
    return dg.define_asset_job(
        name, selection=selection, description=description, executor_def=dg.in_process_executor
    )
