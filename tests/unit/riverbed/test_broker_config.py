"""The local broker's generated configuration: no broker, no Maven, no network."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from riverbed.broker import (
    DIST_ENV,
    LOG4J_CONFIG,
    POM,
    BrokerError,
    LocalBroker,
    initial_heap,
    jvm_options,
    render_server_properties,
)
from riverbed.settings import Settings, load_settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv(DIST_ENV, raising=False)
    return load_settings(home=tmp_path / "home", kafka_port=29400)


def parse_properties(text: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_one_combined_kraft_node_on_loopback(settings: Settings) -> None:
    props = parse_properties(render_server_properties(settings))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29401"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29400,CONTROLLER://127.0.0.1:29401"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29400"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(settings.kafka_dir / "data")


def test_single_node_replication_and_no_surprise_topics(settings: Settings) -> None:
    props = parse_properties(render_server_properties(settings))
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"
    assert props["num.partitions"] == "1"


def test_controller_port_can_be_set_apart(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, kafka_port=29400, kafka_controller_port=29450)
    props = parse_properties(render_server_properties(settings))
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29450"
    assert props["listeners"].endswith("CONTROLLER://127.0.0.1:29450")


@pytest.mark.parametrize(
    ("max_heap", "expected"), [("512m", "256m"), ("1g", "512m"), ("3G", "1536m"), ("1m", "1m")]
)
def test_initial_heap_is_half_the_maximum(max_heap: str, expected: str) -> None:
    assert initial_heap(max_heap) == expected


def test_jvm_options_carry_heap_gc_and_logging(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, kafka_heap="1g")
    options = jvm_options(settings)
    assert options[:2] == ["-Xmx1g", "-Xms512m"]
    assert "-XX:+UseG1GC" in options
    assert f"-Dkafka.logs.dir={settings.kafka_dir / 'logs'}" in options
    assert f"-Dlog4j2.configurationFile={LOG4J_CONFIG}" in options
    assert LOG4J_CONFIG.is_file()


def test_pom_pins_slf4j_2_and_takes_the_kafka_version_from_the_command_line() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    pom = ET.parse(POM).getroot()
    deps = {
        d.findtext("m:artifactId", namespaces=ns): d.findtext("m:version", namespaces=ns)
        for d in pom.iterfind("m:dependencies/m:dependency", ns)
    }
    assert deps["kafka_2.13"] == deps["kafka-tools"] == "${kafka.version}"
    assert pom.findtext("m:properties/m:slf4j.version", namespaces=ns) == "2.0.17"
    assert deps["slf4j-api"] == "${slf4j.version}"
    assert {"log4j-core", "log4j-slf4j2-impl"} <= deps.keys()


def test_jars_live_under_kafka_dir_by_default(settings: Settings) -> None:
    broker = LocalBroker(settings)
    assert broker.libs_dir == settings.kafka_dir / "dist" / "4.4.0" / "libs"
    assert broker.java_classpath() == str(broker.libs_dir / "*")
    assert not broker.is_fetched()


def test_a_shared_dist_is_used_as_is_and_never_fetched_into(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared-dist"
    monkeypatch.setenv(DIST_ENV, str(shared))
    broker = LocalBroker(settings)
    assert broker.libs_dir == shared / "libs"
    with pytest.raises(BrokerError, match=DIST_ENV):
        broker.fetch()
    assert not shared.exists()


def test_status_of_a_broker_never_started(settings: Settings) -> None:
    status = LocalBroker(settings).status()
    assert not status.running
    assert status.pid is None
    assert status.bootstrap == "127.0.0.1:29400"
    assert "not running" in status.message
    assert "4.4.0" in status.message
