"""Riverbed's Prometheus configuration and the state exporter, checked by Prometheus's
own promtool and against the lake read back with DuckDB."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestration.lib import lake_upkeep
from riverbed import lake, prometheus, run_records
from riverbed.settings import load_settings
from riverbed.state_metrics import StateCollector
from tests.support.lake_fixture import txns
from tests.support.monitoring import check_metrics


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: `make test` installs Debian's prometheus")
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False)


def test_the_prepared_configuration_and_rules_pass_promtool(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, kafka_port=9092, lag_threshold=777)
    config = prometheus.prepare(settings)
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = sorted((config.parent / "rules").glob("*.yml"))
    assert {r.name for r in rules} == {"alerts.yml", "recording.yml"}
    checked = promtool("check", "rules", *map(str, rules))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    alerts = (config.parent / "rules" / "alerts.yml").read_text()
    # The settings' thresholds, filled in.
    assert "> 777" in alerts and not re.search(r"\$\{\w+\}", alerts)
    nodes = json.loads((config.parent / "targets" / "kafka" / "nodes.json").read_text())
    assert [n["targets"] for n in nodes] == [
        ["127.0.0.1:9098"],
        ["127.0.0.1:9099"],
        ["127.0.0.1:9100"],
    ]


def test_a_target_is_registered_while_served_and_gone_after(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    with prometheus.serving(settings, "producer", "one", CollectorRegistry()) as port:
        entry = json.loads((tmp_path / "prometheus/targets/producer/one.json").read_text())
        assert entry == [{"targets": [f"127.0.0.1:{port}"], "labels": {}}]
    assert not (tmp_path / "prometheus/targets/producer/one.json").exists()


def test_the_lake_state_matches_the_tables_read_back(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    writer = lake.TableWriter(settings.lake_dir, "transactions")
    writer.claim([lake.app_id("payments.transactions", 0)])
    for start in (0, 100, 250):
        batch = txns(range(start, start + 50 + start // 10))
        writer.append(batch, {lake.app_id("payments.transactions", 0): start + 50 + start // 10})
    registry = CollectorRegistry()
    registry.register(StateCollector(settings))  # not started: no lag read, no Kafka needed
    text = generate_latest(registry).decode()
    check_metrics(text)

    samples = {
        (s.name, s.labels.get("table")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    con = lake.connect_duckdb()
    rows = con.sql(f"select count(*) from {lake.scan_sql(settings.lake_dir, 'transactions')}")
    assert samples[("riverbed_lake_rows", "transactions")] == rows.fetchone()[0] == 50 + 60 + 75
    table = lake.open_table(settings.lake_dir, "transactions")
    assert samples[("riverbed_lake_commits_total", "transactions")] == table.version() + 1
    files = table.file_uris()
    assert samples[("riverbed_lake_files", "transactions")] == len(files)
    assert samples[("riverbed_lake_bytes", "transactions")] == sum(
        Path(f.removeprefix("file://")).stat().st_size for f in files
    )
    assert ("riverbed_lake_rows", "alerts") not in samples  # no table yet: no series


def test_the_batch_jobs_records_are_exposed(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    writer = lake.TableWriter(settings.lake_dir, "transactions")
    app = lake.app_id("payments.transactions", 0)
    writer.claim([app])
    for start in range(0, 40, 10):  # four commits, one small file each
        writer.append(txns(range(start, start + 10)), {app: start + 10})
    began = time.time()
    lake_upkeep.upkeep(settings, "payments", "transactions")
    with pytest.raises(RuntimeError), run_records.timed(settings, "warehouse_build"):
        raise RuntimeError("dbt build failed")
    registry = CollectorRegistry()
    registry.register(StateCollector(settings))
    text = generate_latest(registry).decode()
    check_metrics(text)

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    table = (("table", "transactions"),)
    # The oracle: what Delta's own log says the compaction (OPTIMIZE) did.
    (optimize,) = [
        c
        for c in lake.open_table(settings.lake_dir, "transactions").history()
        if c["operation"] == "OPTIMIZE"
    ]
    removed = optimize["operationMetrics"]["numFilesRemoved"]
    assert removed == 4
    assert samples["riverbed_lake_compacted_files_total", table] == removed
    assert samples["riverbed_lake_compactions_total", (("outcome", "succeeded"), *table)] == 1
    assert samples["riverbed_lake_compactions_total", (("outcome", "failed"), *table)] == 0
    assert samples["riverbed_lake_vacuumed_files_total", table] == 0  # within the retention
    finished = samples["riverbed_lake_last_compaction_success_timestamp_seconds", table]
    assert began <= finished <= time.time()
    assert 0 < samples["riverbed_lake_last_compaction_duration_seconds", table] < 60
    # The failed build: counted, and no success to report.
    assert samples["riverbed_warehouse_builds_total", (("outcome", "failed"),)] == 1
    assert samples["riverbed_warehouse_builds_total", (("outcome", "succeeded"),)] == 0
    assert ("riverbed_warehouse_last_build_success_timestamp_seconds", ()) not in samples
    # A table never upkept: zero, not missing.
    alerts = (("outcome", "succeeded"), ("table", "alerts"))
    assert samples["riverbed_lake_compactions_total", alerts] == 0
