"""The local cluster's generated configuration and layout: no broker, no Maven, no network."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from riverbed.broker import (
    BrokerError,
    LocalCluster,
    cluster_nodes,
    initial_heap,
    jvm_options,
    overrides_path,
    random_cluster_id,
    render_server_properties,
)
from riverbed.kafka_jars import (
    DIST_ENV,
    JMX_EXPORTER_JAR,
    LOG4J_CONFIG,
    POM,
    KafkaJarsError,
)
from riverbed.prometheus import JMX_EXPORTER_RULES
from riverbed.settings import Settings, SettingsError, load_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(home=tmp_path / "home", kafka_port=29400)


def parse_properties(text: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_one_combined_kraft_node_on_loopback(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, kafka_port=29400, kafka_brokers=1)
    (node,) = cluster_nodes(settings)
    props = parse_properties(render_server_properties(settings, node))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29401"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29400,CONTROLLER://127.0.0.1:29401"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29400"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(settings.kafka_dir / "node-1" / "data")
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"


def test_three_nodes_each_a_voter_with_ports_and_data_of_its_own(settings: Settings) -> None:
    nodes = cluster_nodes(settings)
    assert [(n.id, n.client_port, n.controller_port) for n in nodes] == [
        (1, 29400, 29403),
        (2, 29401, 29404),
        (3, 29402, 29405),
    ]
    voters = "1@127.0.0.1:29403,2@127.0.0.1:29404,3@127.0.0.1:29405"
    for node in nodes:
        props = parse_properties(render_server_properties(settings, node))
        assert props["node.id"] == str(node.id)
        assert props["controller.quorum.voters"] == voters
        assert props["listeners"] == (
            f"PLAINTEXT://127.0.0.1:{node.client_port},CONTROLLER://127.0.0.1:{node.controller_port}"
        )
        assert props["log.dirs"] == str(settings.kafka_dir / f"node-{node.id}" / "data")
    assert len({n.data_dir for n in nodes}) == 3


def test_internal_topics_replicated_three_times_two_in_sync(settings: Settings) -> None:
    props = parse_properties(render_server_properties(settings, cluster_nodes(settings)[0]))
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["default.replication.factor"] == "3"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"
    assert props["num.partitions"] == "1"


def test_controller_ports_can_be_set_apart(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, kafka_port=29400, kafka_controller_port=29450)
    nodes = cluster_nodes(settings)
    props = parse_properties(render_server_properties(settings, nodes[1]))
    assert props["controller.quorum.voters"].startswith("1@127.0.0.1:29450,2@127.0.0.1:29451")
    assert props["listeners"].endswith("CONTROLLER://127.0.0.1:29451")


def test_a_cluster_formatted_with_other_nodes_is_refused_naming_the_setting(
    settings: Settings,
) -> None:
    settings.kafka_dir.mkdir(parents=True)
    (settings.kafka_dir / "cluster.json").write_text('{"cluster_id": "x", "brokers": 1}')
    with pytest.raises(BrokerError, match=r"RIVERBED_KAFKA_BROKERS=3.*formatted with 1 node"):
        LocalCluster(settings).start()
    assert not (settings.kafka_dir / "node-2").exists()


def test_a_single_node_of_the_old_layout_moves_in_as_node_1(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, kafka_port=29400, kafka_brokers=1)
    legacy = settings.kafka_dir / "data"
    legacy.mkdir(parents=True)
    (legacy / "meta.properties").write_text("cluster.id=abc\n")
    (settings.kafka_dir / "cluster.id").write_text("abc\n")
    cluster = LocalCluster(settings)
    cluster._check_layout()
    assert (cluster.nodes[0].data_dir / "meta.properties").is_file()
    assert not legacy.exists()
    assert json.loads(cluster.shape_file.read_text()) == {"cluster_id": "abc", "brokers": 1}


def test_the_old_layout_is_not_stretched_into_three_nodes(settings: Settings) -> None:
    legacy = settings.kafka_dir / "data"
    legacy.mkdir(parents=True)
    (legacy / "meta.properties").write_text("cluster.id=abc\n")
    with pytest.raises(BrokerError, match="RIVERBED_KAFKA_BROKERS=1 to keep using it"):
        LocalCluster(settings)._check_layout()
    assert (legacy / "meta.properties").is_file()


@pytest.mark.parametrize(
    ("max_heap", "expected"), [("512m", "256m"), ("1g", "512m"), ("3G", "1536m"), ("1m", "1m")]
)
def test_initial_heap_is_half_the_maximum(max_heap: str, expected: str) -> None:
    assert initial_heap(max_heap) == expected


def test_jvm_options_carry_heap_gc_and_logging(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, kafka_heap="1g")
    agent = tmp_path / JMX_EXPORTER_JAR
    options = jvm_options(settings, cluster_nodes(settings)[0], agent)
    assert options[:2] == ["-Xmx1g", "-Xms512m"]
    assert f"-javaagent:{agent}=127.0.0.1:9098:{JMX_EXPORTER_RULES}" in options
    assert JMX_EXPORTER_RULES.is_file()
    assert "-XX:+UseG1GC" in options
    assert f"-Dkafka.logs.dir={settings.kafka_dir / 'node-1' / 'logs'}" in options
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
    # The JMX exporter jar the broker loads is the one the pom pins.
    exporter = pom.findtext("m:properties/m:jmx.exporter.version", namespaces=ns)
    assert deps["jmx_prometheus_javaagent"] == "${jmx.exporter.version}"
    assert f"jmx_prometheus_javaagent-{exporter}.jar" == JMX_EXPORTER_JAR


def test_jars_live_under_kafka_dir_by_default(settings: Settings) -> None:
    jars = LocalCluster(settings).jars
    assert jars.libs_dir == settings.kafka_dir / "dist" / "4.4.0" / "libs"
    assert jars.java_classpath() == str(jars.libs_dir / "*")
    assert not jars.is_fetched()


def test_a_shared_dist_is_used_as_is_and_never_fetched_into(
    settings: Settings, tmp_path: Path
) -> None:
    shared = tmp_path / "shared-dist"
    jars = LocalCluster(load_settings(home=settings.home, kafka_dist=shared)).jars
    assert jars.libs_dir == shared / "libs"
    with pytest.raises(KafkaJarsError, match=DIST_ENV):
        jars.fetch()
    assert not shared.exists()


def test_status_of_a_broker_never_started(settings: Settings) -> None:
    status = LocalCluster(settings).status()
    assert not status.running
    assert status.pids == {}
    assert status.bootstrap == "127.0.0.1:29400,127.0.0.1:29401,127.0.0.1:29402"
    assert "not running" in status.message and "3 broker(s)" in status.message
    assert "4.4.0" in status.message


def test_metrics_ports_follow_the_controller_ports(tmp_path: Path) -> None:
    nodes = cluster_nodes(load_settings(home=tmp_path, kafka_port=9092, kafka_brokers=3))
    assert [n.metrics_port for n in nodes] == [9098, 9099, 9100]
    with pytest.raises(SettingsError, match="RIVERBED_KAFKA_METRICS_PORT=9093: metrics ports"):
        load_settings(home=tmp_path, kafka_port=9092, kafka_metrics_port=9093)


def test_overrides_apply_over_every_nodes_own_properties(settings: Settings) -> None:
    node = cluster_nodes(settings)[1]
    path = overrides_path(settings)
    path.parent.mkdir(parents=True)
    path.write_text("# a test cluster\n\ngroup.initial.rebalance.delay.ms = 5\nnew.key=a=b\n")
    props = parse_properties(render_server_properties(settings, node))
    assert props["group.initial.rebalance.delay.ms"] == "5"
    assert props["new.key"] == "a=b"
    assert props["node.id"] == "2"  # the rest as before
    path.write_text("no equals sign\n")
    with pytest.raises(BrokerError, match=r"server-overrides\.properties: not a key=value line"):
        render_server_properties(settings, node)


def test_cluster_ids_are_what_kafka_accepts() -> None:
    # Kafka's Uuid: 16 bytes as base64url without padding, never starting with "-".
    ids = {random_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    for cluster_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id) and cluster_id[0] != "-"
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
