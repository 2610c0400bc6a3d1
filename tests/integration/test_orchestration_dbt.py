"""The dbt warehouse materialized through Dagster, in-process, with its checks recorded."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from orchestration.definitions import defs
from orchestration.defs.dbt.assets import VenvDbtCliResource, warehouse_models
from riverbed.settings import load_settings
from tests.support.env import use_settings
from tests.support.lake_fixture import SyntheticLake

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def transaction(i: int) -> dict:
    return {
        "transaction_id": f"t-{i}",
        "card_id": f"c-{i % 7}",
        "merchant_id": f"m-{i % 3}",
        "mcc": "5411",
        "amount": 10 + i,
        "currency": "EUR",
        "country": "FR",
        "lat": 48.85,
        "lon": 2.35,
        "channel": "pos",
        "event_time": T0 + timedelta(seconds=17 * i),
        "late": False,
        "_topic": "payments.transactions",
        "_partition": 0,
        "_offset": i,
    }


def test_materializing_the_warehouse_runs_dbt_and_records_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(home=tmp_path / "riverbed")
    use_settings(monkeypatch, settings)
    lake = SyntheticLake(settings.lake_dir)
    lake.commit("transactions", [transaction(i) for i in range(40)])
    lake.commit(
        "alerts",
        [
            {
                "alert_id": "a-1",
                "rule": "amount_spike",
                "card_id": "c-3",
                "transaction_id": "t-10",
                "event_time": T0 + timedelta(seconds=170),
                "detected_at": T0 + timedelta(seconds=171),
                "score": 0.9,
                "details": "{}",
                "_topic": "payments.transactions",
                "_partition": 0,
                "_offset": 10,
            }
        ],
    )

    definitions = defs()
    result = dg.materialize(
        [warehouse_models],
        resources=definitions.resources,
    )

    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"warehouse/fct_transactions", "warehouse/fct_fraud_alerts"} <= materialized
    checks = result.get_asset_check_evaluations()
    assert len(checks) >= 20
    assert all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert con.execute("select count(*) from fct_transactions").fetchone() == (40,)
    # The build published the read-only copy readers use, with what it built.
    with duckdb.connect(str(settings.warehouse_read_path), read_only=True) as con:
        assert con.execute("select count(*) from fct_transactions").fetchone() == (40,)


def test_the_dbt_resource_knows_the_version_dbt_reports_without_asking_it() -> None:
    """VenvDbtCliResource answers dagster-dbt's version question from the installed
    package instead of starting ``dbt --version`` each build: the same answer."""
    import re
    import subprocess

    resource = defs().resources["dbt"]
    assert isinstance(resource, VenvDbtCliResource)
    reported = subprocess.run(
        [resource.dbt_executable, "--version"], capture_output=True, text=True, check=True
    ).stdout
    core = re.search(r"installed:\s*(\d+\.\d+\.\d+)", reported)
    assert core is not None, reported
    assert str(resource._cli_version) == core.group(1)
