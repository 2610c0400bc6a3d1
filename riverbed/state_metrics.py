"""The lake's, the warehouse's and the consumer groups' state, as Prometheus metrics.

``riverbed metrics`` serves them (``make run`` starts it). Each scrape reads the
state afresh, as an exporter does: the Delta logs (no data files), the published
read copy of the warehouse, and the consumer groups' committed offsets. Nothing is
counted in memory, so nothing restarts from zero or counts twice when this process
or a flow restarts: ``riverbed_lake_commits_total`` is the table's Delta version
plus one, the number of commits in its log.

Metrics:

- ``riverbed_lake_commits_total{table}``, ``riverbed_lake_files{table}``,
  ``riverbed_lake_bytes{table}``, ``riverbed_lake_rows{table}``,
  ``riverbed_lake_last_commit_timestamp_seconds{table}``;
- ``riverbed_warehouse_published_timestamp_seconds`` (the last build's read copy),
  ``riverbed_warehouse_rows{table}`` (in that copy);
- from the batch jobs' records (:mod:`riverbed.run_records`):
  ``riverbed_warehouse_builds_total{outcome}``,
  ``riverbed_warehouse_last_build_duration_seconds``,
  ``riverbed_warehouse_last_build_success_timestamp_seconds``;
  ``riverbed_lake_compactions_total{table,outcome}``,
  ``riverbed_lake_compacted_files_total{table}`` (small files rewritten),
  ``riverbed_lake_vacuumed_files_total{table}``,
  ``riverbed_lake_last_compaction_duration_seconds{table}``,
  ``riverbed_lake_last_compaction_success_timestamp_seconds{table}``;
- ``riverbed_consumer_lag_messages{group,topic,partition}`` (high watermark minus the
  group's committed offset), read every 5 s in the background;
- ``riverbed_state_scrape_errors_total{part}``: parts that could not be read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import duckdb
from confluent_kafka import KafkaException
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from riverbed import lake, run_records
from riverbed.kafka_admin import consumer_lag
from riverbed.settings import Settings
from riverbed.topics import PAYMENTS_TRANSACTIONS

log = logging.getLogger("riverbed.metrics")

LAKE_TABLES = ("transactions", "alerts", "merchant_minute")
LAG_INTERVAL_S = 5.0
LAG_STALE_S = 30.0  # an older reading is not shown: a stale lag would look like no lag


class StateCollector(Collector):
    """Reads the platform's state on every scrape (a Prometheus "custom collector")."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._errors: dict[str, int] = {"lake": 0, "warehouse": 0, "runs": 0, "kafka": 0}
        self._lock = threading.Lock()
        self._lag_read: tuple[float, dict[int, int]] = (-LAG_STALE_S, {})

    def collect(self) -> Iterator[Metric]:
        yield from self._lake()
        yield from self._warehouse()
        yield from self._runs()
        yield from self._lag()
        errors = CounterMetricFamily(
            "riverbed_state_scrape_errors",
            "Parts of the platform's state a scrape could not read.",
            labels=["part"],
        )
        with self._lock:
            counts = dict(self._errors)
        for part, count in counts.items():
            errors.add_metric([part], count)
        yield errors

    def _failed(self, part: str) -> None:
        # Scrapes (the server's threads) and the lag reader count concurrently.
        with self._lock:
            self._errors[part] += 1

    def _lake(self) -> Iterator[Metric]:
        commits = CounterMetricFamily(
            "riverbed_lake_commits", "Commits in the table's Delta log.", labels=["table"]
        )
        files = GaugeMetricFamily("riverbed_lake_files", "Live data files.", labels=["table"])
        size = GaugeMetricFamily(
            "riverbed_lake_bytes", "Bytes of live data files.", labels=["table"]
        )
        rows = GaugeMetricFamily("riverbed_lake_rows", "Rows in live data files.", labels=["table"])
        last = GaugeMetricFamily(
            "riverbed_lake_last_commit_timestamp_seconds",
            "When the table's newest commit was written.",
            labels=["table"],
        )
        for table in LAKE_TABLES:
            try:
                found = lake.summary(self.settings.lake_dir, table)
            except Exception:  # a table mid-creation or unreadable: say so, go on
                log.warning("could not read lake table %s", table, exc_info=True)
                self._failed("lake")
                continue
            if found is None:
                continue
            commits.add_metric([table], found.version + 1)
            files.add_metric([table], found.files)
            size.add_metric([table], found.bytes)
            rows.add_metric([table], found.rows)
            if found.last_commit_at is not None:
                last.add_metric([table], found.last_commit_at)
        yield from (commits, files, size, rows, last)

    def _warehouse(self) -> Iterator[Metric]:
        path = self.settings.warehouse_read_path
        published = GaugeMetricFamily(
            "riverbed_warehouse_published_timestamp_seconds",
            "When the last warehouse build published its read copy.",
        )
        rows = GaugeMetricFamily(
            "riverbed_warehouse_rows", "Rows per table of the read copy.", labels=["table"]
        )
        try:
            published.add_metric([], path.stat().st_mtime)
            con = duckdb.connect(str(path), read_only=True)
            try:
                for schema, table, count in con.execute(
                    "select schema_name, table_name, estimated_size from duckdb_tables()"
                ).fetchall():
                    rows.add_metric([f"{schema}.{table}"], count)
            finally:
                con.close()
        except FileNotFoundError:
            pass  # no build has published yet
        except duckdb.Error:
            log.warning("could not read the warehouse's read copy %s", path, exc_info=True)
            self._failed("warehouse")
        yield from (published, rows)

    def _runs(self) -> Iterator[Metric]:
        builds = CounterMetricFamily(
            "riverbed_warehouse_builds", "Warehouse builds Dagster ran.", labels=["outcome"]
        )
        build_s = GaugeMetricFamily(
            "riverbed_warehouse_last_build_duration_seconds",
            "How long the latest warehouse build took (dbt build and publishing).",
        )
        build_ok = GaugeMetricFamily(
            "riverbed_warehouse_last_build_success_timestamp_seconds",
            "When a warehouse build last succeeded.",
        )
        by_table = ["table"]
        compactions = CounterMetricFamily(
            "riverbed_lake_compactions",
            "Upkeeps (compaction, then vacuum) of the table.",
            labels=["table", "outcome"],
        )
        compacted = CounterMetricFamily(
            "riverbed_lake_compacted_files", "Small files compaction rewrote.", labels=by_table
        )
        vacuumed = CounterMetricFamily(
            "riverbed_lake_vacuumed_files", "Unreferenced files vacuum deleted.", labels=by_table
        )
        compaction_s = GaugeMetricFamily(
            "riverbed_lake_last_compaction_duration_seconds",
            "How long the table's latest upkeep took.",
            labels=by_table,
        )
        compaction_ok = GaugeMetricFamily(
            "riverbed_lake_last_compaction_success_timestamp_seconds",
            "When the table's upkeep last succeeded.",
            labels=by_table,
        )
        try:
            found = run_records.read_all(self.settings)
        except OSError:
            log.warning("could not read the jobs' records", exc_info=True)
            self._failed("runs")
            found = {}
        # Counters from zero before a job's first run: "none yet" is a value, not a gap.
        found.setdefault(("warehouse_build", None), run_records.RunRecord())
        for table in LAKE_TABLES:
            found.setdefault(("lake_compaction", f"payments.{table}"), run_records.RunRecord())
        for (job, subject), run in sorted(found.items(), key=str):
            if job == "warehouse_build":
                builds.add_metric(["succeeded"], run.succeeded)
                builds.add_metric(["failed"], run.failed)
                if run.last_duration_s is not None:
                    build_s.add_metric([], run.last_duration_s)
                if run.last_success_at is not None:
                    build_ok.add_metric([], run.last_success_at)
            elif job == "lake_compaction" and subject:
                table = [subject.rpartition(".")[2]]  # "payments.transactions": the dataset
                compactions.add_metric([*table, "succeeded"], run.succeeded)
                compactions.add_metric([*table, "failed"], run.failed)
                compacted.add_metric(table, run.totals.get("files_removed", 0))
                vacuumed.add_metric(table, run.totals.get("files_vacuumed", 0))
                if run.last_duration_s is not None:
                    compaction_s.add_metric(table, run.last_duration_s)
                if run.last_success_at is not None:
                    compaction_ok.add_metric(table, run.last_success_at)
        yield from (builds, build_s, build_ok, compactions, compacted, vacuumed)
        yield from (compaction_s, compaction_ok)

    def _lag(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "riverbed_consumer_lag_messages",
            "Messages of the topic the consumer group has not committed yet.",
            labels=["group", "topic", "partition"],
        )
        with self._lock:
            read_at, values = self._lag_read
        if time.monotonic() - read_at < LAG_STALE_S:
            group, topic = self.settings.consumer_group, PAYMENTS_TRANSACTIONS
            for partition, behind in sorted(values.items()):
                lag.add_metric([group, topic, str(partition)], behind)
        yield lag

    def start(self) -> StateCollector:
        """Start reading the lag in the background: with a broker down a read can take
        many seconds, longer than a scrape may; a scrape takes the last one read."""
        threading.Thread(target=self._read_lag_forever, daemon=True, name="lag").start()
        return self

    def _read_lag_forever(self) -> None:
        group, topic = self.settings.consumer_group, PAYMENTS_TRANSACTIONS
        said = None  # the last failure logged: a cluster down for an hour is said once
        while True:
            started = time.monotonic()
            try:
                values = consumer_lag(self.settings, group, topic)
                with self._lock:
                    self._lag_read = (time.monotonic(), values)
                if said is not None:
                    log.info("reading the lag of %s on %s again", group, topic)
                said = None
            except (KafkaException, KeyError) as exc:
                self._failed("kafka")  # counted every time: riverbed_state_scrape_errors_total
                if repr(exc) != said:
                    log.warning("could not read the lag of %s on %s: %r", group, topic, exc)
                said = repr(exc)
            time.sleep(max(0.0, LAG_INTERVAL_S - (time.monotonic() - started)))
