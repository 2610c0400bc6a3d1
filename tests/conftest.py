"""Shared fixtures: a real Kafka broker for the tests that need one.

The broker is Riverbed's own local broker (``riverbed.broker.LocalBroker``),
started once per test session on its own port and ``RIVERBED_HOME`` so it never
clashes with a running ``make run``, and stopped at the end of the session.
With ``RIVERBED_TEST_BOOTSTRAP`` set, the tests use that cluster instead.

Tests that touch Kafka take ``kafka_settings``: the declared topics, freshly
created and empty, and a ``RIVERBED_HOME`` of their own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from riverbed.kafka_admin import recreate_topics
from riverbed.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
TEST_HOME = Path(os.environ.get("RIVERBED_TEST_HOME", REPO / ".riverbed-test"))
TEST_PORT = int(os.environ.get("RIVERBED_TEST_KAFKA_PORT", "19092"))


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own RIVERBED_* settings."""
    for key in list(os.environ):
        if key.startswith("RIVERBED_") and not key.startswith("RIVERBED_TEST"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def broker_settings() -> Iterator[Settings]:
    """Settings pointing at a running broker, started for this session if needed."""
    external = os.environ.get("RIVERBED_TEST_BOOTSTRAP")
    if external:
        yield load_settings(kafka_bootstrap=external, home=TEST_HOME / "home")
        return
    from riverbed.broker import LocalBroker

    settings = load_settings(home=TEST_HOME / "broker", kafka_port=TEST_PORT)
    broker = LocalBroker(settings)
    was_running = broker.status().running
    broker.start()
    try:
        yield settings
    finally:
        if not was_running:
            broker.stop()


@pytest.fixture
def kafka_settings(broker_settings: Settings, tmp_path: Path) -> Settings:
    """A running broker with the declared topics empty, a RIVERBED_HOME of this test's, and
    a consumer group of its own.

    The group is new per test because a group a killed flow left with a transaction
    still open cannot be deleted until that transaction times out, and its old offsets
    would then apply to the recreated topic (the flow's transactional ids, which
    include the group, are new per test too).
    """
    recreate_topics(broker_settings)
    return load_settings(
        kafka_bootstrap=broker_settings.bootstrap_servers,
        home=tmp_path / "riverbed",
        consumer_group=f"riverbed.payments.test-{uuid.uuid4().hex[:8]}",
    )
