"""Hand a test's settings to code that reads them from the environment."""

from __future__ import annotations

import pytest

from riverbed.broker import free_port_range
from riverbed.settings import Settings


def use_settings(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """Export ``settings`` as RIVERBED_* so load_settings() (and child processes) see them."""
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)


def free_port() -> int:
    """A port nothing listens on now, for a service a test starts (Dagster, Prometheus).

    Not the kernel's pick (bind to port 0): that comes from the ephemeral range, where
    an outgoing connection may take the port before a restarted service binds it again.
    """
    return free_port_range(1)
