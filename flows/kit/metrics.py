"""The flow's metrics, in Prometheus exposition, served by every flow process.

What is counted is what was committed, never what was merely processed: transactions
when their Delta commit lands (``flows.kit.lake_commits``), dead letters and alerts when
the Kafka transaction that publishes them commits (``flows.kit.kafka_outputs``). A replay
after a crash re-processes records that were not committed before it (they were not
counted either) and skips the ones that were (the sinks drop them before they reach a
commit), so the ``_total`` counters never count a record twice. A process restarts
its counters from zero, which Prometheus's ``rate`` and ``increase`` read as a reset.

Metrics (one registry per process; labels few and bounded):

- ``riverbed_flow_events_total{partition,outcome}``: outcome ``valid`` (into the lake),
  ``late`` (of those, later than the allowed lateness), ``invalid`` (to the DLQ),
  ``resent`` (a duplicate the flow dropped);
- ``riverbed_flow_alerts_total{rule}``;
- ``riverbed_flow_event_to_lake_seconds`` and ``riverbed_flow_event_to_alert_seconds``:
  histograms of the time from an event's own time to its lake commit, or to the
  commit of the Kafka transaction that published its alert;
- ``riverbed_flow_produce_to_lake_seconds`` and ``riverbed_flow_produce_to_alert_seconds``:
  the same from the message's Kafka timestamp (the producer's clock when it sent it),
  which is what the pipeline itself adds: an event that was late when it was sent
  does not count against the flow here;
- ``riverbed_flow_lake_flush_seconds``: histogram of a flush (Delta commits, then the
  Kafka transactions);
- ``riverbed_flow_write_batch_seconds``: histogram of a sink's handling of one batch;
- ``riverbed_flow_watermark_delay_seconds{partition}``: now minus the newest event time
  the partition has seen (the windows close ``RIVERBED_ALLOWED_LATENESS_S`` behind it).

The latency histograms take whole batches at once, because a flush commits
tens of thousands of rows and observing them one by one would cost the flow more than
the rest of its metrics together; ``prometheus_client`` has no bulk observe, hence
:class:`BulkHistogram`, which counts a whole Arrow column per bucket bound.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from riverbed import prometheus
from riverbed.settings import Settings

# Seconds, from "at once" to "ten minutes behind" (a flow catching up on a backlog).
LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300, 600)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class BulkHistogram(Collector):
    """A histogram that observes many values in one call (see the module's docstring):
    per bucket bound, one vectorised comparison over the whole array (pyarrow)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name, self.documentation = name, documentation
        self._bounds = [float(b) for b in buckets]
        self._cumulative = [0] * len(self._bounds)  # values <= each bound (Prometheus's le)
        self._count = 0
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: pa.Array) -> None:
        if not len(values):
            return
        counts = [pc.sum(pc.less_equal(values, b)).as_py() or 0 for b in self._bounds]
        total = pc.sum(values).as_py() or 0.0
        with self._lock:
            self._cumulative = [a + b for a, b in zip(self._cumulative, counts, strict=True)]
            self._count += len(values)
            self._sum += total

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            buckets = [
                (repr(b), float(c)) for b, c in zip(self._bounds, self._cumulative, strict=True)
            ]
            buckets.append(("+Inf", float(self._count)))
            total = self._sum
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


class FlowMetrics:
    """A flow process's metrics; every sink and output of the process reports here."""

    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: Prometheus does not need them
        self.registry = CollectorRegistry()
        self.events = Counter(
            "riverbed_flow_events",
            "Source events committed, by outcome.",
            ["partition", "outcome"],
            registry=self.registry,
        )
        self.alerts = Counter(
            "riverbed_flow_alerts",
            "Alerts (payments: fraud; IoT: anomalies) published (their Kafka transaction "
            "committed).",
            ["rule"],
            registry=self.registry,
        )
        self.join_unmatched = Counter(
            "riverbed_flow_join_unmatched",
            "Interval join: readings that matched nothing, and anchors missing a side.",
            ["side"],
            registry=self.registry,
        )
        self.event_to_lake = BulkHistogram(
            "riverbed_flow_event_to_lake_seconds",
            "From an event's time to the Delta commit of its row.",
            LATENCY_BUCKETS,
        )
        self.event_to_alert = BulkHistogram(
            "riverbed_flow_event_to_alert_seconds",
            "From an event's time to the commit of the transaction publishing its alert.",
            LATENCY_BUCKETS,
        )
        self.produce_to_lake = BulkHistogram(
            "riverbed_flow_produce_to_lake_seconds",
            "From a message's Kafka timestamp to the Delta commit of its row.",
            LATENCY_BUCKETS,
        )
        self.produce_to_alert = BulkHistogram(
            "riverbed_flow_produce_to_alert_seconds",
            "From a message's Kafka timestamp to the commit of the transaction "
            "publishing its alert.",
            LATENCY_BUCKETS,
        )
        for histogram in (
            self.event_to_lake,
            self.event_to_alert,
            self.produce_to_lake,
            self.produce_to_alert,
        ):
            self.registry.register(histogram)
        self.flush_seconds = Histogram(
            "riverbed_flow_lake_flush_seconds",
            "A flush: the Delta commits, then the partitions' Kafka transactions.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.write_batch_seconds = Histogram(
            "riverbed_flow_write_batch_seconds",
            "A sink's handling of one batch of processed events.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._newest_event_s: dict[int, float] = {}
        self._lock = threading.Lock()
        self.registry.register(_WatermarkDelay(self))

    # -- reports -----------------------------------------------------------------------

    def lake_committed(self, rows: pa.Table, produced_ms: pa.ChunkedArray) -> None:
        """Rows of ``transactions`` whose Delta commit just landed, and their messages'
        Kafka timestamps."""
        if not rows.num_rows:
            return
        now_s = time.time()
        event_s = pc.divide(rows.column("event_time").cast(pa.int64()).cast(pa.float64()), 1e6)
        self.event_to_lake.observe_many(pc.subtract(now_s, event_s))
        self.produce_to_lake.observe_many(_seconds_since(produced_ms, now_s))
        by_partition = rows.group_by("_partition").aggregate([("late", "count"), ("late", "sum")])
        for partition, valid, late in zip(
            by_partition.column("_partition").to_pylist(),
            by_partition.column("late_count").to_pylist(),
            by_partition.column("late_sum").to_pylist(),
            strict=True,
        ):
            self.events.labels(str(partition), "valid").inc(valid)
            self.events.labels(str(partition), "late").inc(late or 0)

    def kafka_committed(
        self, partition: int, dead_letters: int, alerts: Sequence[tuple[str, int, int]]
    ) -> None:
        """A partition's Kafka transaction committed: its DLQ records, and its alerts as
        (rule, event time in µs, the triggering message's Kafka timestamp in ms)."""
        if dead_letters:
            self.events.labels(str(partition), "invalid").inc(dead_letters)
        if not alerts:
            return
        now_s = time.time()
        self.event_to_alert.observe_many(pa.array([now_s - us / 1e6 for _, us, _ in alerts]))
        produced = pa.array([ms for _, _, ms in alerts], pa.int64())
        self.produce_to_alert.observe_many(_seconds_since(produced, now_s))
        for rule in {rule for rule, _, _ in alerts}:
            self.alerts.labels(rule).inc(sum(1 for r, _, _ in alerts if r == rule))

    def unmatched(self, side: str, count: int) -> None:
        self.join_unmatched.labels(side).inc(count)

    def resent(self, partition: int, count: int) -> None:
        if count:
            self.events.labels(str(partition), "resent").inc(count)

    def saw_events(self, partition: int, newest_event_us: int) -> None:
        newest = newest_event_us / 1e6
        with self._lock:
            if newest > self._newest_event_s.get(partition, 0.0):
                self._newest_event_s[partition] = newest

    def newest_events(self) -> dict[int, float]:
        with self._lock:
            return dict(self._newest_event_s)

    # -- serving -----------------------------------------------------------------------

    def serve(self, settings: Settings, flow: str, process_id: int | None) -> None:
        """Serve these metrics to Prometheus for the rest of the process's life."""
        index = process_id or 0
        name = f"{flow}-{index}"  # stable: a restarted process replaces its own target
        labels = {"flow": flow, "process": str(index)}
        stack = contextlib.ExitStack()
        stack.enter_context(prometheus.serving(settings, "flows", name, self.registry, labels))
        atexit.register(stack.close)


def _seconds_since(epoch_ms: pa.Array | pa.ChunkedArray, now_s: float) -> pa.Array:
    """Seconds from each Kafka timestamp to ``now_s``; messages without one (-1) left out."""
    known = pc.filter(epoch_ms, pc.greater_equal(epoch_ms, 0))
    return pc.subtract(now_s, pc.divide(known.cast(pa.float64()), 1e3))


class _WatermarkDelay(Collector):
    def __init__(self, metrics: FlowMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "riverbed_flow_watermark_delay_seconds",
            "Now minus the newest event time the partition has seen.",
            labels=["partition"],
        )
        now_s = time.time()
        for partition, newest in sorted(self._metrics.newest_events().items()):
            gauge.add_metric([str(partition)], max(0.0, now_s - newest))
        yield gauge
