"""Lake datasets as assets: Delta tables written continuously by the flows, and their upkeep.

Dagster does not write the tables; the flow does. They are external assets whose
materializations the ``lake_new_files`` sensor records for every new table version,
so the graph reads topic → flow → lake table → dbt models. What Dagster does run is
each table's upkeep (compaction, then vacuum), an asset of its own downstream of the
table, on the ``lake_upkeep_hourly`` schedule.
"""

import dagster as dg

from orchestration.lib import lake_upkeep
from orchestration.lib.keys import flow_key, lake_key, lake_upkeep_key
from orchestration.lib.lake_tables import dataset_names
from orchestration.lib.settings import RiverbedResource
from riverbed.lake import MERGE_KEYS, PARTITION_COLUMN


def _how_written(domain: str, dataset: str) -> str:
    if dataset in MERGE_KEYS:
        keys = ", ".join(MERGE_KEYS[dataset])
        return f"merged (upserted on {keys}) by the {domain} flow"
    return f"appended by the {domain} flow"


lake_datasets = [
    dg.AssetSpec(
        key=lake_key(domain, dataset),
        deps=[flow_key(domain)],
        group_name="lake",
        kinds={"delta"},
        description=(
            f"Delta table at `lake/{domain}/{dataset}/`, partitioned by `{PARTITION_COLUMN}`, "
            f"{_how_written(domain, dataset)}. Each commit also records the next Kafka offset "
            "of every source partition it covers. A materialization is a new table version."
        ),
        metadata={"path": f"lake/{domain}/{dataset}", "partitioned_by": PARTITION_COLUMN},
    )
    for domain, dataset in dataset_names()
]


def _upkeep_asset(domain: str, dataset: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=lake_upkeep_key(domain, dataset),
        deps=[lake_key(domain, dataset)],
        group_name="lake_upkeep",
        kinds={"delta"},
        description=(
            f"Upkeep of the Delta table `lake/{domain}/{dataset}/`: compacts its small files "
            "into files of RIVERBED_LAKE_COMPACT_TARGET_MB, then vacuums the data files no "
            "version references any more once older than RIVERBED_LAKE_VACUUM_RETENTION_H. "
            "Safe while the flow writes."
        ),
    )
    def upkeep(context: dg.AssetExecutionContext, riverbed: RiverbedResource):
        done = lake_upkeep.upkeep(riverbed.settings(), domain, dataset)
        c = done.compaction
        context.log.info(
            f"lake/{domain}/{dataset}: compacted {c.files_removed} files into {c.files_added} "
            f"({c.partitions_optimized} partitions, version {c.version}), vacuumed "
            f"{len(done.vacuumed)}; {done.metadata()['files_after']} files now"
        )
        return dg.MaterializeResult(metadata=done.metadata())

    return upkeep


upkeep_assets = [_upkeep_asset(domain, dataset) for domain, dataset in dataset_names()]

defs = dg.Definitions(assets=[*lake_datasets, *upkeep_assets])
