"""Asset keys shared between the technology folders, so the graph connects."""

from __future__ import annotations

import dagster as dg


def topic_key(topic: str) -> dg.AssetKey:
    return dg.AssetKey(["kafka", topic.replace(".", "_")])


def flow_key(domain: str) -> dg.AssetKey:
    return dg.AssetKey(["flows", domain])


def lake_key(domain: str, dataset: str) -> dg.AssetKey:
    return dg.AssetKey(["lake", domain, dataset])


def lake_upkeep_key(domain: str, dataset: str) -> dg.AssetKey:
    """The upkeep (compaction and vacuum) of a lake table; not under ``lake/`` so that
    prefix selects the tables the flows write, nothing Dagster runs."""
    return dg.AssetKey(["lake_upkeep", domain, dataset])
