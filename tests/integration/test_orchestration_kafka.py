"""Dagster's Kafka assets and checks against the real broker."""

import time

import dagster as dg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewPartitions

from orchestration.definitions import defs
from orchestration.defs.flows.assets import LAG_CHECK
from orchestration.defs.kafka.assets import CHECK_NAME, kafka_topics
from orchestration.lib.settings import RiverbedResource
from riverbed.settings import Settings
from riverbed.topics import CATALOG, PAYMENTS_ALERTS, PAYMENTS_TRANSACTIONS
from tests.support.env import use_settings

pytestmark = pytest.mark.kafka
key = dg.AssetKey.from_user_string


def test_materializing_topics_reconciles_and_records_them(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_settings(monkeypatch, kafka_settings)
    admin = AdminClient(kafka_settings.kafka_client_config())
    for future in admin.delete_topics([PAYMENTS_ALERTS]).values():
        future.result()
    while PAYMENTS_ALERTS in admin.list_topics(timeout=10).topics:  # deletion is asynchronous
        time.sleep(0.1)

    result = dg.materialize([kafka_topics], resources={"riverbed": RiverbedResource()})

    assert result.success
    materializations = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.get_asset_materialization_events()
        for m in [m.step_materialization_data.materialization]
    }
    assert set(materializations) == {f"kafka/{s.name.replace('.', '_')}" for s in CATALOG}
    transactions = materializations["kafka/payments_transactions"]
    assert transactions["partitions"].value == 6
    assert transactions["drift"].value == "none"
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {CHECK_NAME}
    assert all(c.passed for c in checks)


def test_topic_check_fails_on_drift(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_settings(monkeypatch, kafka_settings)
    admin = AdminClient(kafka_settings.kafka_client_config())
    # 3 declared; 5 on the cluster cannot be undone by reconciliation.
    admin.create_partitions([NewPartitions(PAYMENTS_ALERTS, 5)])[PAYMENTS_ALERTS].result()

    result = dg.materialize(
        [kafka_topics],
        resources={"riverbed": RiverbedResource()},
        selection=[key("kafka/payments_alerts")],
    )

    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    assert "partitions 5, declared 3" in (check.description or "")


def test_lag_check_fails_when_nobody_consumes(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_settings(monkeypatch, kafka_settings)
    monkeypatch.setenv("RIVERBED_LAG_THRESHOLD", "100")
    producer = Producer(kafka_settings.kafka_client_config())
    import threading

    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            producer.produce(PAYMENTS_TRANSACTIONS, b"{}", key=str(i % 50).encode())
            producer.poll(0)
            i += 1
            if i % 200 == 0:
                producer.flush()
                stop.wait(0.05)
        producer.flush()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        job = defs().resolve_job_def("flow_health_checks")
        result = job.execute_in_process()
    finally:
        stop.set()
        thread.join()
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    check = checks[LAG_CHECK]
    assert not check.passed
    samples = check.metadata["lag_samples"].value
    assert samples == sorted(samples) and samples[-1] > 100
