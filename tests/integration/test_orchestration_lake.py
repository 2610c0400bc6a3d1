"""The lake through Dagster: new Delta versions coalesce into one warehouse build at a
time, and upkeep (compaction, vacuum) runs while a flow writes without losing a row."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from confluent_kafka import Producer
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from deltalake import DeltaTable

from orchestration.definitions import defs
from orchestration.defs.lake.sensors import lake_freshness, lake_new_files
from orchestration.lib.runs import WAREHOUSE_JOB
from orchestration.lib.settings import RiverbedResource
from riverbed import lake
from riverbed.settings import Settings, load_settings
from riverbed.topics import PAYMENTS_TRANSACTIONS
from tests.support.env import use_settings

T0 = datetime(2026, 11, 24, 23, 59, tzinfo=UTC)  # each batch of 4 straddles midnight
APP = lake.app_id(PAYMENTS_TRANSACTIONS, 0)
RESOURCES = {"riverbed": RiverbedResource()}


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A real instance on disk (a schedule's context needs one it can reference)."""
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = load_settings(home=tmp_path / "riverbed", lake_vacuum_retention_h=1)
    use_settings(monkeypatch, settings)
    return settings


def transactions(first: int, count: int) -> pa.Table:
    """``count`` transactions at offsets ``first``…, 30 s of event time apart, round midnight."""
    return pa.Table.from_pylist(
        [
            {
                "transaction_id": f"t-{i}",
                "card_id": f"c-{i % 7}",
                "merchant_id": f"m-{i % 3}",
                "mcc": "5411",
                "amount": None,
                "currency": "EUR",
                "country": "FR",
                "lat": 48.85,
                "lon": 2.35,
                "channel": "pos",
                "event_time": T0 + timedelta(seconds=30 * (i % 4)),
                "late": False,
                "_topic": PAYMENTS_TRANSACTIONS,
                "_partition": 0,
                "_offset": i,
            }
            for i in range(first, first + count)
        ],
        schema=lake.TRANSACTIONS_SCHEMA,
    )


class Appender:
    """Appends to the transactions table as the flow does: small commits, offsets rising."""

    def __init__(self, lake_dir: Path, batch: int = 4) -> None:
        self.writer = lake.TableWriter(lake_dir, "transactions")
        self.writer.claim([APP])
        self.batch = batch
        self.next_offset = 0
        self.commits = 0

    def append(self) -> None:
        self.writer.append(
            transactions(self.next_offset, self.batch), {APP: self.next_offset + self.batch}
        )
        self.next_offset += self.batch
        self.commits += 1


def table_rows(settings: Settings, dataset: str, columns: list[str]) -> list[dict]:
    # to_pyarrow_dataset, not DeltaTable.to_pyarrow_table: with deltalake 1.6.6 the
    # latter makes the interpreter abort at exit.
    table = DeltaTable(lake.dataset_dir(settings.lake_dir, dataset))
    return table.to_pyarrow_dataset().to_table(columns=columns).to_pylist()


# ---------------------------------------------------------------------------------
# new versions → one warehouse build at a time
# ---------------------------------------------------------------------------------


def tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=RESOURCES)
    result = lake_new_files(context)
    assert isinstance(result, dg.SensorResult)
    return result


def submit(instance: dg.DagsterInstance, request: dg.RunRequest) -> dg.DagsterRun:
    """Queue the requested run, as the sensor daemon does (with a queued run coordinator)."""
    # A queued run must say where its job comes from, for the daemon that dequeues it.
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(
            InProcessCodeLocationOrigin(
                LoadableTargetOrigin(module_name="orchestration.definitions"),
                location_name="riverbed",
            ),
            "__repository__",
        ),
        WAREHOUSE_JOB,
    )
    run = instance.create_run_for_job(
        defs().resolve_job_def(WAREHOUSE_JOB),
        status=dg.DagsterRunStatus.QUEUED,
        tags=request.tags,
        remote_job_origin=origin,
    )
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.QUEUED
    return run


def report(instance: dg.DagsterInstance, run: dg.DagsterRun, event: dg.DagsterEventType) -> None:
    instance.report_dagster_event(
        dg.DagsterEvent(event_type_value=event.value, job_name=run.job_name), run.run_id
    )


def test_new_versions_are_recorded_and_builds_coalesce(
    settings: Settings, instance: dg.DagsterInstance
) -> None:
    appender = Appender(settings.lake_dir)
    appender.append()

    first = tick(instance, None)
    (request,) = first.run_requests or []
    (event,) = first.asset_events
    assert event.asset_key == dg.AssetKey(["lake", "payments", "transactions"])
    recorded = {k: v.value for k, v in event.metadata.items()}
    summary = lake.summary(settings.lake_dir, "transactions")
    assert summary is not None
    assert (recorded["version"], recorded["files"], recorded["rows"]) == (
        summary.version,
        summary.files,
        4,
    )
    run = submit(instance, request)

    # The flow commits again while that build is queued, then while it runs: each new
    # version is recorded, no second build is requested.
    appender.append()
    queued = tick(instance, first.cursor)
    assert not queued.run_requests
    assert [e.metadata["rows"].value for e in queued.asset_events] == [8]
    report(instance, run, dg.DagsterEventType.RUN_START)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    appender.append()
    running = tick(instance, queued.cursor)
    assert not running.run_requests
    assert "in flight" in str(running.skip_reason)
    idle = tick(instance, running.cursor)
    assert not idle.run_requests and not idle.asset_events

    # Finished: the next tick requests the build the commits are owed, once.
    report(instance, run, dg.DagsterEventType.RUN_SUCCESS)
    after = tick(instance, idle.cursor)
    assert len(after.run_requests or []) == 1
    assert not after.asset_events  # those versions were recorded already
    assert not tick(instance, after.cursor).run_requests


def test_warehouse_schedule_skips_while_a_build_is_in_flight(
    settings: Settings, instance: dg.DagsterInstance
) -> None:
    schedule = defs().resolve_schedule_def("warehouse_every_5_minutes")

    def evaluate() -> list[dg.RunRequest]:
        context = dg.build_schedule_context(instance=instance)
        return list(schedule.evaluate_tick(context).run_requests or [])

    assert len(evaluate()) == 1
    run = submit(instance, dg.RunRequest())
    assert evaluate() == []
    report(instance, run, dg.DagsterEventType.RUN_START)
    assert evaluate() == []
    report(instance, run, dg.DagsterEventType.RUN_FAILURE)
    assert len(evaluate()) == 1


# ---------------------------------------------------------------------------------
# upkeep while the flow writes
# ---------------------------------------------------------------------------------


def merchant_minute(revision: int) -> pa.Table:
    """Ten merchants' windows, all rewritten by every revision (as late updates do)."""
    start = T0 + timedelta(seconds=60)
    return pa.Table.from_pylist(
        [
            {
                "merchant_id": f"m-{m}",
                "window_start": start,
                "window_end": start + timedelta(seconds=60),
                "txn_count": revision,
                "amount_sum": None,
                "amount_min": None,
                "amount_max": None,
                "amount_mean": None,
                "distinct_cards": 1,
                "alert_count": 0,
            }
            for m in range(10)
        ],
        schema=lake.MERCHANT_MINUTE_SCHEMA,
    )


def test_upkeep_compacts_while_the_flow_writes_and_loses_nothing(settings: Settings) -> None:
    appender = Appender(settings.lake_dir)
    for _ in range(30):  # 30 small commits, two files each (two event_dates)
        appender.append()
    before = lake.summary(settings.lake_dir, "transactions")
    assert before is not None and before.files == 60

    upserts = lake.TableWriter(settings.lake_dir, "merchant_minute")
    upserts.claim([APP])
    revisions = [0]
    stop = threading.Event()
    errors: list[BaseException] = []

    def flow() -> None:
        try:
            while not stop.is_set():
                appender.append()
                revisions[0] += 1
                upserts.upsert(
                    merchant_minute(revisions[0]),
                    {APP: revisions[0]},
                    keep_if="s.txn_count >= t.txn_count",
                )
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=flow, daemon=True)
    thread.start()
    commits_before_upkeep = appender.commits
    try:
        result = defs().resolve_job_def("lake_upkeep").execute_in_process(resources=RESOURCES)
        # Let the flow commit on top of the compacted table too.
        deadline = time.monotonic() + 10
        while appender.commits < commits_before_upkeep + 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not errors, errors
    assert result.success
    assert appender.commits > commits_before_upkeep

    metadata = {
        e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }
    # Every table, the IoT flow's too (absent here: their upkeep finds nothing to do).
    assert set(metadata) == {
        *(f"lake_upkeep/payments/{t}" for t in ("transactions", "alerts", "merchant_minute")),
        *(f"lake_upkeep/iot/{t}" for t in ("readings", "anomalies", "device_window", "room_state")),
    }
    upkeep = metadata["lake_upkeep/payments/transactions"]
    assert upkeep["files_removed"] >= before.files
    assert 1 <= upkeep["files_added"] < upkeep["files_removed"]
    assert upkeep["partitions_optimized"] >= 2
    assert upkeep["version"] > before.version
    # Vacuum keeps what compaction replaced for the retention (1 h here): a read that
    # started before the compaction can still finish.
    assert upkeep["files_vacuumed"] == 0

    # Every appended row exactly once, whatever raced with what.
    offsets = sorted(r["_offset"] for r in table_rows(settings, "transactions", ["_offset"]))
    assert offsets == list(range(appender.next_offset))
    after = lake.summary(settings.lake_dir, "transactions")
    assert after is not None and after.rows == appender.next_offset
    assert after.files < 2 * appender.commits  # what the flow alone would have left
    # The offsets the flow resumes from survived the compaction.
    table = DeltaTable(lake.dataset_dir(settings.lake_dir, "transactions"))
    assert table.transaction_version(APP) == appender.next_offset
    on_disk = list(lake.dataset_dir(settings.lake_dir, "transactions").rglob("*.parquet"))
    assert len(on_disk) > after.files  # the replaced files, kept for the retention

    # Upserts that raced the compaction were retried, not lost: every window holds the
    # last revision, once.
    windows = table_rows(settings, "merchant_minute", ["merchant_id", "txn_count"])
    assert sorted(w["merchant_id"] for w in windows) == [f"m-{m}" for m in range(10)]
    assert {w["txn_count"] for w in windows} == {revisions[0]}


def test_upkeep_of_tables_the_flow_never_wrote_is_a_no_op(settings: Settings) -> None:
    result = defs().resolve_job_def("lake_upkeep").execute_in_process(resources=RESOURCES)
    assert result.success
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        assert metadata["files_removed"].value == 0
        assert metadata["rows_after"].value == 0


def test_upkeep_schedule_skips_while_upkeep_is_in_flight(
    settings: Settings, instance: dg.DagsterInstance
) -> None:
    definitions = defs()
    schedule = definitions.resolve_schedule_def("lake_upkeep_hourly")
    context = dg.build_schedule_context(instance=instance)
    assert len(schedule.evaluate_tick(context).run_requests or []) == 1
    instance.create_run_for_job(
        definitions.resolve_job_def("lake_upkeep"), status=dg.DagsterRunStatus.STARTED
    )
    assert not schedule.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests


# ---------------------------------------------------------------------------------
# freshness, against the real broker
# ---------------------------------------------------------------------------------


@pytest.mark.kafka
def test_freshness_fails_when_the_topic_grows_and_the_lake_does_not(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    use_settings(monkeypatch, kafka_settings)
    monkeypatch.setenv("RIVERBED_FRESHNESS_THRESHOLD_S", "1")
    cursor: list[str | None] = [None]

    def evaluate() -> dg.SkipReason:
        context = dg.build_sensor_context(instance=instance, cursor=cursor[0], resources=RESOURCES)
        try:
            return lake_freshness(context)
        finally:
            cursor[0] = context.cursor

    producer = Producer(kafka_settings.kafka_client_config())
    producer.produce(PAYMENTS_TRANSACTIONS, b"{}", key=b"c-1")
    producer.flush()
    assert "fresh" in str(evaluate().skip_message)  # pending, within the threshold
    time.sleep(1.5)
    with pytest.raises(Exception, match="got no commit for"):
        evaluate()

    Appender(kafka_settings.lake_dir).append()  # the flow catches up
    assert "fresh (table version 1)" in str(evaluate().skip_message)
