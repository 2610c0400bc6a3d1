"""A real Prometheus, configured as `make run` configures it, scraping the session's
Kafka node and `riverbed metrics`: what it stores is what the cluster says."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from riverbed import prometheus
from riverbed.settings import Settings, load_settings
from riverbed.topics import PAYMENTS_TRANSACTIONS
from tests.support.flow_harness import REPO, end_offsets

pytestmark = pytest.mark.kafka


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def query(settings: Settings, promql: str) -> list[dict]:
    url = f"{prometheus.url(settings)}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())["data"]["result"]


def wait_for(settings: Settings, promql: str, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = query(settings, promql)
        except OSError:
            found = []  # not listening yet
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"Prometheus never had {promql}")


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
    prometheus.prepare(settings)
    server = subprocess.Popen(
        prometheus.command(settings), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    exporter = subprocess.Popen(
        [sys.executable, "-m", "riverbed.cli", "metrics"],
        env={**os.environ, **settings.to_env()},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    try:
        yield settings
    finally:
        for process in (exporter, server):
            process.send_signal(signal.SIGTERM)
            process.wait(30)


def test_prometheus_scrapes_the_brokers_and_the_state_exporter(monitored: Settings) -> None:
    producer = Producer({**monitored.kafka_client_config(), "acks": "all"})
    for i in range(300):
        producer.produce(PAYMENTS_TRANSACTIONS, f"m{i}".encode(), partition=i % 6)
    assert producer.flush(30) == 0

    assert wait_for(monitored, 'up{job="kafka"} == 1')
    assert wait_for(monitored, 'up{job="riverbed"} == 1')
    # Nobody consumes: the group's lag is every message of the topic (the oracle: the
    # topic's high watermarks, read by a consumer of our own).
    expected = sum(end_offsets(monitored).values())
    lag = wait_for(monitored, f"sum(riverbed_consumer_lag_messages) == {expected}")
    assert float(lag[0]["value"][1]) == expected == 300
    messages = wait_for(
        monitored,
        f'kafka_server_brokertopicmetrics_messagesin_total{{topic="{PAYMENTS_TRANSACTIONS}"}}'
        " >= 300",
    )
    assert messages
    # No flow runs: its alert is on its way (pending for its 30 s "for", then firing).
    alerts = wait_for(monitored, 'ALERTS{alertname="RiverbedFlowDown"}')
    assert alerts[0]["metric"]["alertstate"] in {"pending", "firing"}
