"""The flow's metrics through a kill -9 and a restart: the restarted process counts
exactly what it committed, never a replayed batch the killed one had committed.

The oracles are the lake (rows read back with DuckDB) and the alerts topic (read
with read_committed), each read at the moment of the kill and at the end."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from riverbed.settings import Settings, load_settings
from riverbed.topics import PAYMENTS_ALERTS, PAYMENTS_DLQ
from tests.support.faults import Supervised
from tests.support.flow_harness import (
    drained,
    generate,
    produce,
    query,
    read_topic,
    scan,
    yesterday_at,
)
from tests.support.monitoring import check_metrics, exposition, scrape_target, total

pytestmark = pytest.mark.kafka


def lake_rows(settings: Settings, dataset: str) -> int:
    try:
        return query(f"select count(*) from {scan(settings, dataset)}")[0][0]
    except Exception:  # no table yet
        return 0


def messages(settings: Settings, topic: str) -> int:
    return sum(1 for _ in read_topic(settings, topic))


def test_counters_never_count_a_replayed_batch_twice(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    # A short transaction timeout: the killed flow's open transactions are aborted soon.
    # Flushes every second rather than every 5 s: each wait below is for a flush.
    settings = load_settings(
        **{
            **kafka_settings.model_dump(exclude_none=True),
            "flow_transaction_timeout_s": 10,
            "flush_interval_s": 1.0,
        }
    )
    began = time.monotonic()
    # At noon UTC the second half completes six fraud patterns (fraud.FraudRules over
    # the events in order); at some hours it completes none.
    events = generate(6000, seed=21, start=yesterday_at(12))
    flow = Supervised(settings, tmp_path / "flow.log").start()
    try:
        produce(settings, events[:3000], seconds=6)
        flow.run_until(lambda: lake_rows(settings, "transactions") > 500, 120, "a first commit")
        flow.signal(signal.SIGKILL)
        flow._procs[0].wait(10)
        time.sleep(1)  # the workers die with their group
        lake_at_kill = lake_rows(settings, "transactions")
        alerts_at_kill = messages(settings, PAYMENTS_ALERTS)
        dlq_at_kill = messages(settings, PAYMENTS_DLQ)

        flow.start()  # the restart a deployment's liveness sensor makes
        produce(settings, events[3000:], seconds=3)
        flow.run_until(drained(settings), 180, "the flow to drain the topic")
        time.sleep(settings.flush_interval_s + 1)  # the last flush's counts
        target = settings.home / "prometheus/targets/flows/payments-0.json"
        check_metrics(exposition(target))
        samples = scrape_target(target)
    finally:
        flow.stop()

    restarted_valid = total(samples, "riverbed_flow_events_total", outcome="valid")
    assert restarted_valid == lake_rows(settings, "transactions") - lake_at_kill
    assert restarted_valid > 0
    alerts_after = messages(settings, PAYMENTS_ALERTS) - alerts_at_kill
    assert total(samples, "riverbed_flow_alerts_total") == alerts_after > 0
    assert total(samples, "riverbed_flow_events_total", outcome="invalid") == (
        messages(settings, PAYMENTS_DLQ) - dlq_at_kill
    )
    # Every committed row's latency was observed once, by the process that committed it,
    # from its event time and from its send; every published alert's from its send.
    assert total(samples, "riverbed_flow_event_to_lake_seconds_count") == restarted_valid
    assert total(samples, "riverbed_flow_produce_to_lake_seconds_count") == restarted_valid
    assert total(samples, "riverbed_flow_produce_to_alert_seconds_count") == alerts_after
    # Measured from the producer's clock: none longer than the test has run.
    waited = total(samples, "riverbed_flow_produce_to_lake_seconds_sum")
    assert 0 < waited <= restarted_valid * (time.monotonic() - began)
