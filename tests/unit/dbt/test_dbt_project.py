"""The dbt project itself: documented, shaped per folder, keys tested, safe on an empty lake.

These run real dbt on real DuckDB, but need no service and no data: a fresh
``RIVERBED_HOME`` with no lake at all, as on a platform whose flow has not flushed yet.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.support.lake_fixture import DbtRun, SyntheticLake, merchant_minute_rows, run_dbt

MARTS = {
    "fct_transactions": "incremental",
    "fct_fraud_alerts": "incremental",
    "agg_merchant_hourly": "incremental",
    "dim_cards": "table",
    "dim_merchants": "table",
    "fct_fraud_daily": "table",
    "fct_iot__anomalies": "incremental",
    "fct_iot__device_hourly": "incremental",
    "fct_iot__device_uptime": "table",
    "fct_iot__room_occupancy": "incremental",
}
# model -> its key; the key must carry a uniqueness and a not-null test
KEYS = {
    "fct_transactions": ["transaction_id"],
    "fct_fraud_alerts": ["alert_id"],
    "dim_cards": ["card_id"],
    "dim_merchants": ["merchant_id"],
    "agg_merchant_hourly": ["merchant_id", "hour_start"],
    "fct_fraud_daily": ["event_date", "rule"],
    "stg_payments__merchant_minute": ["merchant_id", "window_start"],
    "fct_iot__anomalies": ["anomaly_id"],
    "fct_iot__device_hourly": ["device_id", "hour_start"],
    "fct_iot__device_uptime": ["device_id", "hour_start"],
    "fct_iot__room_occupancy": ["room_id", "hour_start"],
    "stg_iot__readings": ["reading_id"],
    "stg_iot__room_state": ["reading_id"],
    "stg_iot__device_window": ["device_id", "window_start"],
}
# the not-null tests of a view's key may sit on another model (e.g. its base: no dedup)
NOT_NULL_ON: dict[str, str] = {
    "stg_iot__readings": "base_iot__readings",
    "stg_iot__room_state": "base_iot__room_state",
}


@dataclass
class EmptyBuild:
    home: Path
    run: DbtRun
    manifest: dict[str, Any]

    def models(self) -> dict[str, dict[str, Any]]:
        return {
            n["name"]: n
            for n in self.manifest["nodes"].values()
            if n["resource_type"] == "model" and n["package_name"] == "riverbed"
        }

    def tests_on(self, model: str) -> list[dict[str, Any]]:
        uid = f"model.riverbed.{model}"
        return [
            n
            for n in self.manifest["nodes"].values()
            if n["resource_type"] == "test" and n.get("attached_node") == uid
        ]


@pytest.fixture(scope="module")
def empty_build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmptyBuild]:
    """``dbt build`` with no lake at all."""
    home = tmp_path_factory.mktemp("empty") / "riverbed"
    home.mkdir()
    run = run_dbt(home, "build")
    manifest = json.loads((run.target_path / "manifest.json").read_text())
    yield EmptyBuild(home, run, manifest)


def test_build_on_an_empty_lake_succeeds(empty_build: EmptyBuild) -> None:
    assert empty_build.run.ok, empty_build.run.output[-6000:]
    con = duckdb.connect(str(empty_build.home / "warehouse.duckdb"), read_only=True)
    try:
        for mart in MARTS:
            assert con.execute(f"select count(*) from {mart}").fetchall() == [(0,)], mart
    finally:
        con.close()


def test_dbt_unit_tests_pass(empty_build: EmptyBuild) -> None:
    statuses = empty_build.run.statuses()
    unit = {uid: s for uid, s in statuses.items() if uid.startswith("unit_test.")}
    assert len(unit) >= 6
    assert set(unit.values()) == {"pass"}, unit


def test_every_model_and_column_is_documented(empty_build: EmptyBuild) -> None:
    con = duckdb.connect(str(empty_build.home / "warehouse.duckdb"), read_only=True)
    try:
        for name, node in empty_build.models().items():
            assert node["description"].strip(), f"{name} has no description"
            documented = {c: v["description"].strip() for c, v in node["columns"].items()}
            assert all(documented.values()), f"{name}: undocumented {documented}"
            if node["config"]["materialized"] == "ephemeral":
                continue
            actual = {
                r[0]
                for r in con.execute(
                    "select column_name from information_schema.columns where table_name = ?",
                    [name],
                ).fetchall()
            }
            assert actual == set(documented), f"{name}: columns {actual} vs yml {documented}"
    finally:
        con.close()


def test_materialization_follows_the_folder(empty_build: EmptyBuild) -> None:
    for name, node in empty_build.models().items():
        materialized = node["config"]["materialized"]
        folder = node["original_file_path"].split("/")[1]
        if folder == "staging":
            assert materialized == "view", name
        elif folder == "intermediate":
            # the per-country activity is kept additively (macros/activity.sql)
            expected = "incremental" if name.endswith("_country_activity") else "ephemeral"
            assert materialized == expected, name
        else:
            assert MARTS[name] == materialized, name


def test_every_key_is_tested_and_fails_the_build(empty_build: EmptyBuild) -> None:
    for model, key in KEYS.items():
        tests = empty_build.tests_on(model)
        kinds = {
            (t["test_metadata"]["name"], t.get("column_name"))
            for t in tests
            if t.get("test_metadata")
        }
        if len(key) == 1:
            assert ("unique", key[0]) in kinds, (model, kinds)
        else:
            combos = [
                t["test_metadata"]["kwargs"]["columns"]
                for t in tests
                if t.get("test_metadata", {}).get("name") == "unique_combination"
            ]
            assert key in combos, (model, combos)
        not_null = {
            t.get("column_name")
            for t in empty_build.tests_on(NOT_NULL_ON.get(model, model))
            if t.get("test_metadata", {}).get("name") == "not_null"
        }
        assert set(key) <= not_null, (model, key, not_null)
        assert all(t["config"]["severity"].lower() == "error" for t in tests), model


def test_first_commits_after_an_empty_start_are_loaded(
    empty_build: EmptyBuild, tmp_path: Path
) -> None:
    """A warehouse built before the flow wrote anything picks the lake up when it comes."""
    assert empty_build.run.ok, empty_build.run.output[-6000:]
    home = tmp_path / "riverbed"
    home.mkdir()
    # The warehouse the build with no lake left (empty facts, incremental from now on),
    # a copy of its own: the other tests read the original.
    for name in ("warehouse.duckdb", "warehouse.duckdb.wal"):
        if (empty_build.home / name).exists():
            shutil.copy2(empty_build.home / name, home / name)
    lake = SyntheticLake(home / "lake")
    rng = random.Random(3)
    start = datetime(2026, 11, 25, 12, tzinfo=UTC)
    txns = lake.offsets.assign(
        {
            "transaction_id": f"tx-{i}",
            "card_id": f"card-{i % 7}",
            "merchant_id": f"m-{i % 3}",
            "mcc": "5411",
            "amount": Decimal(rng.randrange(1, 10_000)) / 100,
            "currency": "EUR",
            "country": "FR",
            "lat": 48.85,
            "lon": 2.35,
            "channel": "pos",
            "event_time": start + timedelta(seconds=7 * i),
        }
        for i in range(50)
    )
    lake.commit("transactions", txns)
    lake.upsert_windows(merchant_minute_rows(txns))
    result = run_dbt(home, "build")
    assert result.ok, result.output[-6000:]
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("select count(*) from fct_transactions").fetchall() == [(50,)]
        assert con.execute("select sum(txn_count) from agg_merchant_hourly").fetchall() == [(50,)]
        assert con.execute("select count(*) from fct_fraud_alerts").fetchall() == [(0,)]
    finally:
        con.close()


def test_the_profile_loads_delta_from_the_installed_package_only(empty_build: EmptyBuild) -> None:
    """The plugin points DuckDB at the duckdb-ext-delta package and forbids downloads."""
    from riverbed.lake import duckdb_extension_dir

    log = (empty_build.home / "dbt-logs" / "dbt.log").read_text()
    assert "INSTALL" not in log.upper().replace("INSTALLED", "")
    assert Path(duckdb_extension_dir()).is_dir()
