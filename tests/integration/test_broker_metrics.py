"""The local nodes' Prometheus metrics: Kafka's JMX metrics through the JMX exporter
agent (monitoring/jmx_exporter.yaml), scraped from the session's broker."""

from __future__ import annotations

import re
import urllib.request

import pytest
from confluent_kafka import Producer

from riverbed.broker import LocalCluster
from riverbed.settings import Settings
from riverbed.topics import PAYMENTS_TRANSACTIONS
from tests.support.monitoring import check_metrics

pytestmark = pytest.mark.kafka

# The standard broker metrics the rules promise (issue: partition health, ISR changes,
# traffic, request rates and latency, the active controller).
PROMISED = (
    "kafka_server_replicamanager_underreplicatedpartitions",
    "kafka_server_replicamanager_offlinereplicacount",
    "kafka_server_replicamanager_isrshrinks_total",
    "kafka_server_replicamanager_isrexpands_total",
    "kafka_server_brokertopicmetrics_bytesin_total",
    "kafka_server_brokertopicmetrics_bytesout_total",
    "kafka_server_brokertopicmetrics_messagesin_total",
    "kafka_network_requestmetrics_requests_total",
    "kafka_network_requestmetrics_totaltime_p99_seconds",
    "kafka_controller_kafkacontroller_activecontrollercount",
    "jvm_memory_used_bytes",
)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def sample(text: str, series: str) -> float:
    """A series' value, 0 when it is not exposed (yet)."""
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_node_exposes_the_standard_broker_metrics_and_they_count(
    broker_settings: Settings, kafka_settings: Settings
) -> None:
    node = LocalCluster(broker_settings).nodes[0]
    series = f'kafka_server_brokertopicmetrics_messagesin_total{{topic="{PAYMENTS_TRANSACTIONS}"}}'
    before = sample(scrape(node.metrics_url), series)

    producer = Producer({**kafka_settings.kafka_client_config(), "acks": "all"})
    for i in range(500):
        producer.produce(PAYMENTS_TRANSACTIONS, f"m{i}".encode())
    assert producer.flush(30) == 0

    text = scrape(node.metrics_url)
    assert sample(text, series) - before == 500
    missing = [name for name in PROMISED if not re.search(rf"^{name}[{{ ]", text, re.MULTILINE)]
    assert missing == []
    assert sample(text, "kafka_controller_kafkacontroller_activecontrollercount") == 1

    check_metrics(text)
