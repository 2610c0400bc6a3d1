"""A producer's metrics, in Prometheus exposition: messages sent, delivered and failed,
and the rate asked for. ``riverbed produce`` serves them while it runs.

The values are read from :class:`producers.kafka_loop.SendCounts` at each scrape:
delivered is sent minus failed minus still in flight, so a message counts as
delivered once, when the broker acknowledged it, and never before.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from producers.kafka_loop import SendCounts
from riverbed import prometheus
from riverbed.settings import Settings


@contextlib.contextmanager
def serving(
    settings: Settings, counts: SendCounts, *, domain: str, topic: str, rate: float
) -> Iterator[None]:
    """Serve a producer's metrics to Prometheus for the block, registered as the target
    ``<domain>-<pid>`` of the ``producer`` job (what ``riverbed produce`` does)."""
    registry = CollectorRegistry()
    registry.register(ProducerCollector(counts, topic, rate))
    with prometheus.serving(settings, "producer", f"{domain}-{os.getpid()}", registry):
        yield


class ProducerCollector(Collector):
    def __init__(self, counts: SendCounts, topic: str, rate: float) -> None:
        self.counts, self.topic, self.rate = counts, topic, rate

    def collect(self) -> Iterator[Metric]:
        counts = self.counts
        for name, doc, value in (
            ("riverbed_producer_sent", "Messages handed to the Kafka client.", counts.sent),
            (
                "riverbed_producer_delivered",
                "Messages the cluster acknowledged.",
                counts.delivered,
            ),
            ("riverbed_producer_failed", "Messages whose delivery failed.", counts.failed),
        ):
            family = CounterMetricFamily(name, doc, labels=["topic"])
            family.add_metric([self.topic], value)
            yield family
        rate = GaugeMetricFamily(
            "riverbed_producer_target_rate_events_per_second",
            "The rate the producer was asked for (0: as fast as it can).",
            labels=["topic"],
        )
        rate.add_metric([self.topic], self.rate)
        yield rate
