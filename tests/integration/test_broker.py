"""The local Kafka cluster, one node of it, for real: fetch, start, produce, restart,
consume, stop (tests/integration/test_cluster.py runs three nodes).

Each test that starts a broker gets a RIVERBED_HOME of its own and free ports
(``free_port_range``: client, controller and metrics), so it never meets the session
broker of tests/conftest.py nor a developer's ``make run``; the external-cluster test
uses the session broker as the cluster someone else runs. The jars are the session's
(``kafka_dist`` in tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from riverbed.broker import BrokerError, LocalCluster, free_port_range
from riverbed.settings import Settings, load_settings

pytestmark = pytest.mark.kafka

TOPIC = "riverbed.test.broker"


def make_settings(home: Path, kafka_dist: Path, **overrides: object) -> Settings:
    return load_settings(
        home=home,
        kafka_port=free_port_range(3),
        kafka_brokers=1,
        kafka_dist=kafka_dist,
        **overrides,
    )


@pytest.fixture
def brokers() -> Iterator[list[LocalCluster]]:
    """Brokers a test builds; every one of them is stopped afterwards, whatever happened."""
    made: list[LocalCluster] = []
    yield made
    for broker in made:
        broker.stop()


@pytest.fixture
def broker(brokers: list[LocalCluster], kafka_dist: Path, tmp_path: Path) -> LocalCluster:
    brokers.append(LocalCluster(make_settings(tmp_path / "home", kafka_dist)))
    return brokers[-1]


def produce(settings: Settings, messages: list[tuple[str, str]]) -> None:
    admin = AdminClient(settings.kafka_client_config())
    admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result(timeout=30)
    errors: list[object] = []
    producer = Producer({**settings.kafka_client_config(), "acks": "all"})
    for key, value in messages:
        producer.produce(TOPIC, value, key, on_delivery=lambda err, _: err and errors.append(err))
    assert producer.flush(30) == 0
    assert errors == []


def consume(settings: Settings, count: int) -> list[tuple[str, str]]:
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([TOPIC])
    got: list[tuple[str, str]] = []
    try:
        for _ in range(60):
            for message in consumer.consume(count - len(got), timeout=0.5):
                assert message.error() is None, message.error()
                got.append((message.key().decode(), message.value().decode()))
            if len(got) >= count:
                break
    finally:
        consumer.close()
    return got


def is_running(pid: int) -> bool:
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def test_messages_survive_a_restart(broker: LocalCluster) -> None:
    started = broker.start()
    node = broker.nodes[0]
    pid = started.pids[1]
    assert started.running
    assert started.message.startswith("started")
    messages = [(f"card-{i}", f"payment {i}") for i in range(5)]
    produce(broker.settings, messages)

    stopped = broker.stop()
    assert not stopped.running
    assert not is_running(pid)
    assert not node.pid_file.exists()
    assert not broker.status().running

    restarted = broker.start()
    assert restarted.running and restarted.pids[1] != pid
    assert consume(broker.settings, len(messages)) == messages


@pytest.fixture
def sigterm_ignored() -> Iterator[None]:
    """This process ignores SIGTERM, as one started in the background does once Dagster
    has run in it (Dagster points SIGTERM at SIGINT's handler, SIG_IGN there)."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_start_and_stop_are_idempotent(broker: LocalCluster, sigterm_ignored: None) -> None:
    # Stopped, not killed after the stop timeout: the node does not inherit the ignored
    # SIGTERM (a JVM that does never runs its shutdown hook).
    first = broker.start()
    again = broker.start()
    assert again.running and again.pids == first.pids
    assert "already running" in again.message
    status = broker.status()
    assert status.running and status.pids == first.pids
    assert "4.4.0" in status.message and str(broker.kafka_dir) in status.message

    assert f"broker 1 (127.0.0.1:{broker.settings.kafka_port}) stopped" in broker.stop().message
    assert broker.stop().message == "not running"


@pytest.mark.parametrize("held", ["client", "controller"])
def test_a_port_held_by_another_process_is_named(broker: LocalCluster, held: str) -> None:
    settings = broker.settings
    port = settings.kafka_port if held == "client" else settings.controller_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(BrokerError) as raised:
            broker.start()
    message = str(raised.value)
    assert f"port {port}" in message and f"{held} port" in message
    setting = "RIVERBED_KAFKA_PORT" if held == "client" else "RIVERBED_KAFKA_CONTROLLER_PORT"
    assert setting in message
    assert not broker.nodes[0].pid_file.exists()


def test_a_stale_pid_file_is_cleaned(broker: LocalCluster) -> None:
    node = broker.nodes[0]
    node.dir.mkdir(parents=True)
    node.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not a Kafka broker
    assert not broker.status().running
    started = broker.start()
    assert started.running and started.pids[1] != os.getpid()
    assert node.pid_file.read_text().strip() == str(started.pids[1])


def test_a_broker_dying_at_start_shows_its_log(
    brokers: list[LocalCluster], kafka_dist: Path, tmp_path: Path
) -> None:
    # Too small a heap for the JVM to even initialise: it exits at once.
    broker = LocalCluster(make_settings(tmp_path / "home", kafka_dist, kafka_heap="2m"))
    brokers.append(broker)
    with pytest.raises(BrokerError) as raised:
        broker.start()
    message = str(raised.value)
    assert "exited with code" in message
    assert "broker.out" in message and "Error occurred during initialization of VM" in message
    assert not broker.nodes[0].pid_file.exists()


def test_an_external_cluster_is_used_not_started_or_stopped(
    broker_settings: Settings, tmp_path: Path
) -> None:
    # The "external" cluster is the session's running broker, seen from another home
    # (a broker of this test's own would cost a start and a stop and show nothing more).
    bootstrap = broker_settings.bootstrap_servers
    external = LocalCluster(load_settings(home=tmp_path / "other", kafka_bootstrap=bootstrap))
    started = external.start()
    assert started.message.startswith(f"external cluster at {bootstrap}")
    assert "no local broker started" in started.message
    assert started.running and started.pids == {}
    assert "no local broker to stop" in external.stop().message
    with Consumer({**broker_settings.kafka_client_config(), "group.id": "test.external"}) as c:
        assert c.list_topics(timeout=30).brokers, "the external cluster stopped answering"
    assert not (tmp_path / "other").exists()


def test_make_run_stops_the_broker_it_or_a_killed_run_started_not_one_started_by_hand(
    broker: LocalCluster,
) -> None:
    from orchestration import platform

    settings = broker.settings
    # A platform starts the broker: it owns it.
    assert platform.start_broker(settings) is True
    # It was killed before stopping it: the next platform finds it running and owns it.
    assert platform.start_broker(settings) is True
    platform.stop_broker(settings)
    assert not broker.status().running
    # Started by hand: the platform uses it and leaves it running.
    broker.start()
    assert platform.start_broker(settings) is False
    assert broker.status().running
