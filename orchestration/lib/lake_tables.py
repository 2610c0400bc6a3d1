"""The lake's Delta tables as the control plane sees them: one per (domain, dataset)."""

from __future__ import annotations

from pathlib import Path

from orchestration.lib.flows import FLOWS
from riverbed import lake


def dataset_names() -> list[tuple[str, str]]:
    """(domain, dataset) of every table a flow writes."""
    return [(spec.domain, dataset) for spec in FLOWS.values() for dataset in spec.datasets]


def table_name(domain: str, dataset: str) -> str:
    """The name a cursor or a log line uses for a table: ``payments/transactions``."""
    return f"{domain}/{dataset}"


def summaries(lake_dir: Path) -> dict[str, lake.TableSummary | None]:
    """Version, files, rows and last commit of every table, from its log (None: absent)."""
    return {
        table_name(domain, dataset): lake.summary(lake_dir, dataset, domain)
        for domain, dataset in dataset_names()
    }
