"""The Riverbed settings as Dagster sees them: a resource every definition shares."""

from __future__ import annotations

import dagster as dg

from riverbed.settings import Settings, load_settings


class RiverbedResource(dg.ConfigurableResource):
    """Riverbed's settings, read from ``RIVERBED_*`` when a run or sensor uses them.

    Reading at use time (not at import) keeps the code location loadable with no
    broker running, and lets tests point it elsewhere per test.
    """

    def settings(self) -> Settings:
        return load_settings()
