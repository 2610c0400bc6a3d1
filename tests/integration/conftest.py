"""Fixtures shared by the integration tests' modules."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.lake_fixture import build_together


@pytest.fixture(scope="session")
def warehouse_scenarios(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The payments and the IoT warehouse scenarios (``builds`` of test_warehouse.py and
    test_warehouse_iot.py), on one lake and one warehouse: a dbt build builds both
    domains' marts anyway, so each of the four builds serves both scenarios. The IoT
    scenario's first build, before any IoT table exists, is the payments scenario's
    first."""
    from tests.integration import test_warehouse, test_warehouse_iot

    home = tmp_path_factory.mktemp("warehouse") / "riverbed"
    home.mkdir(parents=True)
    return build_together(
        home, {"payments": test_warehouse.builds(home), "iot": test_warehouse_iot.builds(home)}
    )
