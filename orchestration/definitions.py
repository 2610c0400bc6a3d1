"""The Riverbed code location: every topic, flow, lake dataset and model, one graph.

Definitions live in ``orchestration/defs/<technology>/`` and are loaded from
there; this file only assembles them with the shared resources.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from orchestration.lib.settings import RiverbedResource


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    return dg.Definitions.merge(
        loaded,
        dg.Definitions(resources={"riverbed": RiverbedResource()}),
    )
