"""A real Prometheus, configured as `make run` configures it, scraping the session's
Kafka node, `riverbed metrics`, a producer and a flow of two processes: what it stores
is what the cluster and the lake say. (Every series the Grafana dashboard queries:
tests/e2e, on the whole platform.)"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.payments import produce_payments
from riverbed import lake
from riverbed.settings import Settings, load_settings
from riverbed.topics import PAYMENTS_TRANSACTIONS
from riverbed.warehouse import publish_read_copy
from tests.support.env import free_port
from tests.support.flow_harness import (
    drained,
    end_offsets,
    generate,
    produce,
    query,
    scan,
    start_flow,
    stop_flow,
    wait_until,
)
from tests.support.lake_fixture import txns
from tests.support.monitoring import query as promql
from tests.support.monitoring import running_prometheus, wait_for

pytestmark = pytest.mark.kafka


@pytest.fixture
def monitored(
    broker_settings: Settings, kafka_settings: Settings, tmp_path: Path
) -> Iterator[Settings]:
    """Prometheus and `riverbed metrics` for the session's broker, as `make run` runs them."""
    settings = load_settings(
        home=tmp_path / "riverbed",
        kafka_port=broker_settings.kafka_port,
        kafka_brokers=1,
        kafka_dist=broker_settings.kafka_dist,
        consumer_group=kafka_settings.consumer_group,
        prometheus_port=free_port(),
    )
    # Scrapes, rule evaluations and alerts' "for" on a clock three times faster than
    # `make run`'s (the same configuration otherwise): every wait below is for a scrape.
    with running_prometheus(settings, time_scale=3):
        yield settings


def test_prometheus_scrapes_every_part_it_is_told_of(
    monitored: Settings,
) -> None:
    # What the exporter reads: a lake table and a published warehouse copy.
    writer = lake.TableWriter(monitored.lake_dir, "transactions")
    app = lake.app_id(PAYMENTS_TRANSACTIONS, 0)
    writer.claim([app])
    writer.append(txns(range(40)), {app: 40})
    publish_read_copy(monitored)
    producer = threading.Thread(
        target=produce_payments,
        args=(monitored,),
        kwargs={"rate": 100, "count": None, "duration": 8, "seed": 5, "serve_metrics": True},
    )
    producer.start()
    try:
        for job in ("kafka", "riverbed", "producer"):
            assert wait_for(monitored, f'up{{job="{job}"}} == 1'), job
        assert wait_for(monitored, 'riverbed_lake_rows{table="transactions"} == 40')
        assert wait_for(monitored, "riverbed_producer_delivered_total > 0")
        assert wait_for(monitored, "riverbed_warehouse_published_timestamp_seconds")
        # Nobody consumes: the group's lag is every message of the topic (the oracle: the
        # topic's high watermarks, read by a consumer of our own).
        expected = sum(end_offsets(monitored).values())
        assert wait_for(monitored, f"sum(riverbed_consumer_lag_messages) >= {expected}")
    finally:
        producer.join()
    # No flow runs: its alert is on its way (pending for its "for", then firing).
    alerts = wait_for(monitored, 'ALERTS{alertname="RiverbedFlowDown"}')
    assert alerts[0]["metric"]["alertstate"] in {"pending", "firing"}


def test_every_process_of_a_flow_is_scraped_and_counts_what_it_committed(
    monitored: Settings,
) -> None:
    events = generate(3000, seed=17)
    produce(monitored, events)
    log = monitored.home / "flow.log"
    procs = start_flow(monitored, log, processes=2)
    try:
        wait_until(drained(monitored), 120, "the flow to drain the topic", procs, log)
        # Each process is a target of its own, with its own port.
        up = wait_for(monitored, 'count(up{job="flows"} == 1) == 2')
        assert up
        processes = {r["metric"]["process"] for r in promql(monitored, 'up{job="flows"}')}
        assert processes == {"0", "1"}
        # Together they count every row the lake holds, once (the oracle: DuckDB over
        # the Delta table), and every partition was counted by one process only.
        (rows,) = query(f"select count(*) from {scan(monitored, 'transactions')}")[0]
        assert rows > 0
        valid = 'sum(riverbed_flow_events_total{outcome="valid"})'
        assert wait_for(monitored, f"{valid} == {rows}", timeout=30)
        per_partition = promql(
            monitored, 'count by (partition) (riverbed_flow_events_total{outcome="valid"})'
        )
        assert per_partition and all(r["value"][1] == "1" for r in per_partition)
    finally:
        stop_flow(procs)
