"""Hand a test's settings to code that reads them from the environment."""

from __future__ import annotations

import pytest

from riverbed.settings import Settings


def use_settings(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """Export ``settings`` as RIVERBED_* so load_settings() (and child processes) see them."""
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
