"""The dbt warehouse as assets: one per model, dbt tests as asset checks.

The dbt project is read from its manifest (``dbt/target/manifest.json``), which
``make setup`` prepares with ``dbt parse``; nothing runs dbt at import. The lake
sources map onto the lake dataset assets, so the graph reads
lake dataset → staging → marts. One writer at a time: the dbt process itself takes the
warehouse's writer lock (Riverbed's dbt-duckdb plugin, so a manual ``dbt build`` obeys
it too), and builds share the ``duckdb_warehouse`` pool (limit 1 in dagster.yaml). After
a build succeeds it publishes the read-only copy people and dashboards query.
"""

import importlib.metadata
import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from packaging import version

from orchestration.lib.keys import lake_key
from orchestration.lib.settings import RiverbedResource
from riverbed import run_records
from riverbed.warehouse import publish_read_copy

DBT_DIR = Path(__file__).resolve().parents[3] / "dbt"
WAREHOUSE_POOL = "duckdb_warehouse"


@cache
def dbt_project() -> DbtProject:
    project = DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR)
    if not project.manifest_path.exists():
        raise FileNotFoundError(
            f"{project.manifest_path} is missing: run `make setup` (it runs `dbt parse`)"
        )
    return project


class RiverbedDbtTranslator(DagsterDbtTranslator):
    """Lake sources are the lake dataset assets; models live under ``warehouse/``."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return lake_key(dbt_resource_props["source_name"], dbt_resource_props["name"])
        return dg.AssetKey(["warehouse", dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "warehouse"


class VenvDbtCliResource(DbtCliResource):
    """dagster-dbt's dbt resource, for the dbt installed in this virtual environment.

    Before every build, dagster-dbt runs ``dbt --version`` to learn which dbt it will
    start (a whole dbt start-up: 3-4 s of CPU) and sets up a dbt adapter in the run's
    own process (~2 s more), which it needs only to fetch column metadata or row counts,
    which these assets never ask for. Under ``make run`` builds follow one another all
    day on two cores, so both are answered here instead: the executable is this venv's
    (see ``defs``), so its version is the installed dbt-core's. Measured (CPU seconds of
    a materialization of the warehouse, dbt's process included, 3 rounds alternating,
    2026-12-01, on a busy machine): 26-31 s with dagster-dbt's own resource, 20-25 s
    with this one. Both methods are private to
    dagster-dbt (pinned in pyproject.toml); ``tests/integration/test_orchestration_dbt.py``
    checks the version against ``dbt --version`` and builds through this resource.
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(importlib.metadata.version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        return None


@dbt_assets(
    manifest=dbt_project().manifest_path,
    project=dbt_project(),
    dagster_dbt_translator=RiverbedDbtTranslator(),
    pool=WAREHOUSE_POOL,
)
def warehouse_models(
    context: dg.AssetExecutionContext, dbt: VenvDbtCliResource, riverbed: RiverbedResource
) -> Iterator[Any]:
    settings = riverbed.settings()
    # dbt's profile finds the DuckDB file and the lake from RIVERBED_HOME.
    os.environ["RIVERBED_HOME"] = str(settings.home)
    # stream() raises once dbt has finished if the build failed: nothing is published then,
    # and readers keep the last good copy.
    # dbt's unit tests check the models' logic on fixed inputs, not the data: they
    # belong to CI (`make test` runs them), not to every build, as dbt advises.
    # Recorded for the metrics (riverbed_warehouse_build_*), also when it fails.
    with run_records.timed(settings, "warehouse_build"):
        build = dbt.cli(["build", "--exclude-resource-type", "unit_test"], context=context)
        yield from build.stream()
        published = publish_read_copy(settings)
    context.log.info(f"published the warehouse's read-only copy: {published}")
    # dagster-dbt gives every invocation its own target directory (compiled SQL, run
    # results): one per build, thousands a day under `make run`. A failed build's stays
    # for inspection (stream() raised above); a successful one's goes.
    shutil.rmtree(build.target_path, ignore_errors=True)


defs = dg.Definitions(
    assets=[warehouse_models],
    resources={
        # The venv's own dbt, whether or not the venv is activated.
        "dbt": VenvDbtCliResource(
            project_dir=dbt_project(), dbt_executable=str(Path(sys.executable).parent / "dbt")
        )
    },
)
