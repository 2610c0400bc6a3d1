"""Lake datasets as assets: Parquet written continuously by the flows.

Dagster does not write them; the flow does. They are external assets whose
materializations the ``lake_new_files`` sensor records when new files are
committed, so the graph reads topic → flow → lake dataset → dbt models.
"""

import dagster as dg

from orchestration.lib.flows import FLOWS
from orchestration.lib.keys import flow_key, lake_key

lake_datasets = [
    dg.AssetSpec(
        key=lake_key(spec.domain, dataset),
        deps=[flow_key(spec.domain)],
        group_name="lake",
        kinds={"parquet"},
        description=(
            f"`lake/{spec.domain}/{dataset}/event_date=…/*.parquet`, committed by the "
            f"{spec.domain} flow; files listed in `lake/_manifest/{spec.domain}/{dataset}.jsonl`."
        ),
        metadata={"path": f"lake/{spec.domain}/{dataset}"},
    )
    for spec in FLOWS.values()
    for dataset in spec.datasets
]

defs = dg.Definitions(assets=lake_datasets)
