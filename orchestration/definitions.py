"""The Riverbed code location: every topic, flow, lake dataset and model, one graph.

Definitions live in ``orchestration/defs/<technology>/`` and are loaded from
there; this file only assembles them with the shared resources.
"""

from __future__ import annotations

import dagster as dg

import orchestration.defs
from orchestration.lib.settings import RiverbedResource


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_defs(orchestration.defs)
    return dg.Definitions.merge(
        loaded,
        dg.Definitions(resources={"riverbed": RiverbedResource()}),
    )
