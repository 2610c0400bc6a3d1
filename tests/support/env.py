"""Hand a test's settings to code that reads them from the environment."""

from __future__ import annotations

import socket

import pytest

from riverbed.settings import Settings


def use_settings(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """Export ``settings`` as RIVERBED_* so load_settings() (and child processes) see them."""
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)


def free_port() -> int:
    """A port nothing listens on now, for a service a test starts (Dagster, Prometheus)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
