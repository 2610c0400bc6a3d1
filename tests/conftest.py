"""Shared fixtures: a real Kafka broker for the tests that need one.

The broker is a one-node local cluster (``riverbed.broker.LocalCluster``),
started once per test session on its own port and ``RIVERBED_HOME`` so it never
clashes with a running ``make run``, and stopped at the end of the session.
With ``RIVERBED_TEST_BOOTSTRAP`` set, the tests use that cluster instead.

Tests that touch Kafka take ``kafka_settings``: the declared topics, freshly
created and empty, and a ``RIVERBED_HOME`` of their own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from riverbed.broker import LocalCluster, overrides_path
from riverbed.kafka_admin import recreate_topics
from riverbed.kafka_health import wait_in_sync
from riverbed.kafka_jars import KafkaJars
from riverbed.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
# `make test` runs the suite on two pytest-xdist workers (gw0, gw1): each has a broker,
# a home and ports of its own (100 apart), so neither sees the other's topics or files.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_WORKER_INDEX = int(WORKER[2:]) if WORKER.startswith("gw") else 0
SHARED_TEST_HOME = Path(os.environ.get("RIVERBED_TEST_HOME", REPO / ".riverbed-test"))
TEST_HOME = SHARED_TEST_HOME / WORKER if WORKER else SHARED_TEST_HOME
TEST_PORT = int(os.environ.get("RIVERBED_TEST_KAFKA_PORT", "19092")) + 100 * _WORKER_INDEX
# The three-node cluster of the cluster and fault tests: client ports from here on.
CLUSTER_PORT = TEST_PORT + 10
# The secured three-node cluster of tests/integration/test_secure.py.
SECURE_PORT = TEST_PORT + 20
# Read at import, before any test's environment is cleared.
SHARED_DIST = os.environ.get("RIVERBED_KAFKA_DIST")

# Every JVM of the session (brokers, Kafka's tools; also those a command under test
# starts) compiles with C1 only: a broker then starts on about half the CPU time (C2's
# compiler threads fight the other JVMs for two cores), and a test's load never needs
# C2's peak speed.
JVM_TEST_OPTIONS = "-XX:TieredStopAtLevel=1"
if JVM_TEST_OPTIONS not in os.environ.get("JAVA_TOOL_OPTIONS", ""):
    os.environ["JAVA_TOOL_OPTIONS"] = (
        os.environ.get("JAVA_TOOL_OPTIONS", "") + " " + JVM_TEST_OPTIONS
    ).strip()

# The three-node cluster's brokers sweep for timed-out transactions every second
# instead of every 10 s, so a test that waits for the broker to abort a transaction of
# a frozen flow (transaction.timeout.ms) waits for that timeout, not for the next sweep.
TEST_CLUSTER_OVERRIDES = {"transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000"}


# The files whose tests run on the three-node cluster (checked at collection).
CLUSTER_FILES = ("test_alerts.py", "test_cluster.py", "test_faults.py")
# The files that share the session's `warehouse_scenarios` (tests/integration/conftest.py):
# on one worker its four dbt builds run once, not once per worker (~110 s each on CI).
WAREHOUSE_FILES = ("test_warehouse.py", "test_warehouse_iot.py")
# Units of work larger than a file, by name (see pytest_xdist_make_scheduler).
UNITS = {"cluster": CLUSTER_FILES, "warehouse": WAREHOUSE_FILES}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the three-node cluster run one after the other (from where the first
    of them is), so that ``cluster`` can stop it after the last: three idle JVMs would
    otherwise slow every later test on two cores."""
    on_cluster = [item for item in items if "cluster" in _fixtures(item)]
    strays = sorted({item.path.name for item in on_cluster} - set(CLUSTER_FILES))
    if strays:
        raise pytest.UsageError(f"add {strays} to CLUSTER_FILES in tests/conftest.py")
    if not on_cluster:
        return
    first = items.index(on_cluster[0])
    rest = [item for item in items if "cluster" not in _fixtures(item)]
    items[:] = rest[:first] + on_cluster + rest[first:]


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Under pytest-xdist, a test file is one unit of work (a module's fixtures, such as
    the end-to-end platform, start once), and the files of each of ``UNITS`` together
    are one: only one worker ever runs the three-node cluster, or builds the warehouse
    scenarios. Units go out in collection order.

    (xdist's own ``--dist loadgroup`` would do this with marks, but with pytest 9.2 its
    group suffix never reaches the node ids, so the marks are ignored.)"""
    from xdist.scheduler import LoadScopeScheduling

    class FileOrClusterScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            name = path.rsplit("/", 1)[-1]
            return next((unit for unit, files in UNITS.items() if name in files), path)

    config.option.loadscopereorder = False
    return FileOrClusterScheduling(config, log)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[object]:
    """A failed test on the three-node cluster or the whole platform reports the state
    they were in when it failed (tests/support/diagnosis.py): CI shows only the report."""
    report = yield
    if report.when == "call" and report.failed:  # type: ignore[attr-defined]
        from tests.support import diagnosis

        found = getattr(item, "funcargs", {})
        if "cluster" in found:
            text = diagnosis.cluster_report(found["cluster"])
            report.sections.append(("the three-node cluster when the test failed", text))  # type: ignore[attr-defined]
        if "platform" in found:
            text = diagnosis.platform_report(found["platform"])
            report.sections.append(("the platform when the test failed", text))  # type: ignore[attr-defined]
    return report


def _fixtures(item: pytest.Item) -> list[str]:
    return list(getattr(item, "fixturenames", ()))


def _needs_cluster_later(item: pytest.Item) -> bool:
    items = item.session.items
    later = items[items.index(item) + 1 :] if item in items else []
    return any("cluster" in _fixtures(other) for other in later)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own RIVERBED_* settings."""
    for key in list(os.environ):
        if key.startswith("RIVERBED_") and not key.startswith("RIVERBED_TEST"):
            monkeypatch.delenv(key)


@contextlib.contextmanager
def running(cluster: LocalCluster) -> Iterator[LocalCluster]:
    """``cluster`` started, and stopped afterwards unless it already ran before."""
    was_running = cluster.status().running
    cluster.start()
    try:
        yield cluster
    finally:
        if not was_running:
            cluster.stop()


@pytest.fixture(scope="session")
def kafka_dist() -> Path:
    """Kafka's jars for every broker, cluster and Kafka tool of the session, fetched once
    (``RIVERBED_KAFKA_DIST``, when the session starts with it set, names jars to reuse)."""
    if SHARED_DIST:
        return Path(SHARED_DIST)
    # One fetch for all workers: the first takes the lock and fetches, the other waits
    # and finds the jars there.
    home = SHARED_TEST_HOME / "broker"
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return KafkaJars(load_settings(home=home)).fetch().parent


@pytest.fixture(scope="session")
def broker_settings(kafka_dist: Path) -> Iterator[Settings]:
    """Settings pointing at a running broker, started for this session if needed."""
    external = os.environ.get("RIVERBED_TEST_BOOTSTRAP")
    if external:
        yield load_settings(
            kafka_bootstrap=external, home=TEST_HOME / "home", kafka_dist=kafka_dist
        )
        return
    # One node: most tests are about Riverbed, not replication, and three JVMs on two
    # cores would slow every one of them. tests/integration/test_cluster.py and the
    # fault suite run clusters of three.
    settings = load_settings(
        home=TEST_HOME / "broker", kafka_port=TEST_PORT, kafka_brokers=1, kafka_dist=kafka_dist
    )
    with running(LocalCluster(settings)):
        yield settings


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
        kafka_dist=broker_settings.kafka_dist,
    )


@pytest.fixture(scope="session")
def cluster_session(kafka_dist: Path) -> Iterator[LocalCluster]:
    """A local three-node cluster of its own, new for the session (as on a fresh clone),
    started once and stopped after it."""
    settings = load_settings(
        home=TEST_HOME / "cluster", kafka_port=CLUSTER_PORT, kafka_brokers=3, kafka_dist=kafka_dist
    )
    # Kept, the data directories of a developer's tree grow with every session: brokers
    # remove deleted topics lazily, and one tree held 96 of them.
    LocalCluster(settings).stop()
    shutil.rmtree(settings.home, ignore_errors=True)
    write_overrides(settings, TEST_CLUSTER_OVERRIDES)
    with running(LocalCluster(settings)) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def secure_cluster(kafka_dist: Path) -> Iterator[LocalCluster]:
    """A secured three-node cluster (SASL/SCRAM over TLS, ACLs), new for the module that
    uses it and stopped after it."""
    settings = load_settings(
        home=TEST_HOME / "secure",
        kafka_port=SECURE_PORT,
        kafka_brokers=3,
        kafka_secure=True,
        kafka_dist=kafka_dist,
        flush_interval_s=1,
        snapshot_interval_s=1,
    )
    # New secrets, users, ACLs and lake every time (a run interrupted before may have
    # left its cluster running: stop that first).
    LocalCluster(settings).stop()
    shutil.rmtree(settings.home, ignore_errors=True)
    with running(LocalCluster(settings)) as cluster:
        yield cluster


def write_overrides(settings: Settings, overrides: dict[str, str]) -> None:
    """The cluster's server-overrides.properties (riverbed.broker), read at each start."""
    path = overrides_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key}={value}\n" for key, value in overrides.items()))


@pytest.fixture
def cluster(
    cluster_session: LocalCluster, request: pytest.FixtureRequest
) -> Iterator[LocalCluster]:
    """The three-node cluster with every node up and every partition in sync: a test
    that takes a node away leaves the next one nothing to clean up. Stopped after the
    last test that takes it."""
    cluster_session.start()
    wait_in_sync(cluster_session.settings, timeout=120)
    yield cluster_session
    if not _needs_cluster_later(request.node):
        cluster_session.stop()
