"""The local Apache Kafka cluster that Riverbed fetches and runs.

With ``RIVERBED_KAFKA_BOOTSTRAP`` unset, Riverbed runs ``RIVERBED_KAFKA_BROKERS``
KRaft nodes (default 3) on 127.0.0.1. Each node is a broker and a controller in
one JVM (KRaft's combined mode), and every node is a voter of one static
controller quorum, so the cluster keeps working while a majority of its nodes
runs. Node *n* (1, 2, ...) takes client port ``RIVERBED_KAFKA_PORT + n - 1`` and
controller port ``RIVERBED_KAFKA_CONTROLLER_PORT + n - 1`` (by default the
controller ports follow the last client port: 9092-9094, then 9095-9097).
Everything lives under ``settings.kafka_dir``::

    kafka/
      dist/<version>/libs/     the jars, fetched once from Maven Central (riverbed.kafka_jars)
      cluster.json             the cluster id and the number of nodes, fixed at formatting
      cluster.lock             serialises start, stop and restart between processes
      server-overrides.properties  optional: properties applied over every node's own
      secrets/                 secured mode only: CA, certificates, users' passwords
                               (riverbed.kafka_security)
      node-1/
        server.properties      rewritten from the settings on every start
        data/                  log.dirs: topics, consumer offsets, the metadata log
        logs/server.log        the node's own log (INFO, rolled by size)
        logs/broker.out        its console (warnings, JVM errors) of the last start
        broker.pid             pid of the running node
      node-2/ ...

With ``RIVERBED_KAFKA_BOOTSTRAP`` set, Riverbed uses that cluster: ``start``,
``stop`` and ``restart`` do nothing and say so, and ``status`` tells whether the
cluster answers (:mod:`riverbed.kafka_health` reports on any cluster's brokers,
quorum and partitions).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import random
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from confluent_kafka import KafkaError, KafkaException

from riverbed import kafka_security
from riverbed.files import write_atomically
from riverbed.kafka_admin import quiet_admin
from riverbed.kafka_health import cluster_health, wait_in_sync
from riverbed.kafka_jars import (
    LOG4J_CONFIG,
    LOG_TAIL_LINES,
    KafkaJars,
    java,
    last_lines,
)
from riverbed.prometheus import JMX_EXPORTER_RULES
from riverbed.settings import Settings

log = logging.getLogger("riverbed.broker")

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
IN_SYNC_TIMEOUT_S = 300.0
HOST = "127.0.0.1"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"

# Kafka's own launcher defaults (kafka-run-class.sh), so the broker behaves as
# operators expect; ExitOnOutOfMemoryError because a broker limping on after an
# OOM is worse than one that is visibly down.
_GC_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

# Nodes launched by this Python process: stop() waits on the Popen itself, so
# the child is reaped (no zombie that still looks alive, no ResourceWarning).
_launched: dict[int, subprocess.Popen[bytes]] = {}


class BrokerError(RuntimeError):
    """The local cluster could not be started, stopped or restarted; says why and what to do."""


@dataclass(frozen=True)
class Node:
    """One node of the local cluster: a broker and a controller in one JVM."""

    id: int
    client_port: int
    controller_port: int
    dir: Path
    metrics_port: int  # Prometheus exposition of the node's JMX metrics

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.client_port}"

    @property
    def name(self) -> str:
        return f"broker {self.id} ({self.address})"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def console_log(self) -> Path:
        """The node's stdout and stderr (warnings, JVM errors) since its last start."""
        return self.logs_dir / "broker.out"

    @property
    def config_path(self) -> Path:
        return self.dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.dir / "broker.pid"


@dataclass(frozen=True)
class NodeState:
    node: Node
    pid: int | None

    @property
    def running(self) -> bool:
        return self.pid is not None


@dataclass(frozen=True)
class ClusterStatus:
    """``running``: every node runs (an external cluster: it answers)."""

    running: bool
    bootstrap: str
    message: str
    nodes: tuple[NodeState, ...] = ()

    @property
    def pids(self) -> dict[int, int]:
        return {s.node.id: s.pid for s in self.nodes if s.pid is not None}


# --- configuration ---------------------------------------------------------------------


def cluster_nodes(settings: Settings) -> tuple[Node, ...]:
    return tuple(
        Node(
            id=n,
            client_port=settings.kafka_port + n - 1,
            controller_port=settings.controller_port + n - 1,
            dir=settings.kafka_dir / f"node-{n}",
            metrics_port=settings.metrics_port + n - 1,
        )
        for n in range(1, settings.kafka_brokers + 1)
    )


def server_properties(settings: Settings, node: Node) -> dict[str, str]:
    """One node's configuration: a combined KRaft node, every node a voter."""
    nodes = cluster_nodes(settings)
    replication = str(min(3, len(nodes)))
    min_isr = str(min(2, len(nodes)))
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.id),
        # A static quorum rather than the dynamic one (controller.quorum.bootstrap.servers
        # with format --standalone): the dynamic one records the controllers' endpoints in
        # the metadata log at format time, so changing the ports later would strand the data.
        "controller.quorum.voters": ",".join(f"{n.id}@{HOST}:{n.controller_port}" for n in nodes),
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://{node.address},CONTROLLER://{HOST}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{node.address}",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(node.data_dir),
        "num.partitions": "1",
        # Topics Riverbed declares set their own replication (riverbed.kafka_admin);
        # these are for the internal topics and anything created by hand.
        "default.replication.factor": replication,
        "offsets.topic.replication.factor": replication,
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_isr,
        # Topics are declared (riverbed's topic catalog); a typo must not create one.
        "auto.create.topics.enable": "false",
        # Consumers of a local cluster start together: do not make the first wait 3 s.
        "group.initial.rebalance.delay.ms": "0",
        **(
            kafka_security.server_properties(settings, node.client_port, node.controller_port)
            if settings.kafka_secure
            else {}
        ),
    }


def overrides_path(settings: Settings) -> Path:
    """Properties applied over every node's own on each start (``key=value`` lines), for
    what Riverbed has no setting for, e.g. a test cluster's shorter timeouts."""
    return settings.kafka_dir / "server-overrides.properties"


def server_overrides(settings: Settings) -> dict[str, str]:
    try:
        text = overrides_path(settings).read_text()
    except FileNotFoundError:
        return {}
    overrides = {}
    for line in (line.strip() for line in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        if not equals:
            raise BrokerError(f"{overrides_path(settings)}: not a key=value line: {line!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def render_server_properties(settings: Settings, node: Node) -> str:
    """server.properties as written to disk: the node's own, then the overrides."""
    props = {**server_properties(settings, node), **server_overrides(settings)}
    lines = ["# Written by riverbed.broker on every start: change RIVERBED_* settings, not this."]
    # Backslash is the escape character of Java properties files (think paths).
    lines += [key + "=" + value.replace("\\", "\\\\") for key, value in props.items()]
    return "\n".join(lines) + "\n"


def initial_heap(max_heap: str) -> str:
    """-Xms for a given -Xmx: half of it, so an idle dev broker does not claim the lot."""
    amount, unit = int(max_heap[:-1]), max_heap[-1].lower()
    megabytes = amount * 1024 if unit == "g" else amount
    return f"{max(megabytes // 2, 1)}m"


def jvm_options(settings: Settings, node: Node, agent: Path) -> list[str]:
    """The node's JVM options; ``agent`` is the Prometheus JMX exporter's jar."""
    return [
        f"-Xmx{settings.kafka_heap}",
        f"-Xms{initial_heap(settings.kafka_heap)}",
        *_GC_OPTIONS,
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={node.logs_dir}",
        # The exporter serves /metrics from inside the JVM: the broker's own MBeans,
        # renamed by the rules (monitoring/jmx_exporter.yaml), and the JVM's.
        f"-javaagent:{agent}={HOST}:{node.metrics_port}:{JMX_EXPORTER_RULES}",
    ]


# --- waiting for a cluster -------------------------------------------------------------


def wait_for_metadata(
    settings: Settings,
    timeout: float = START_TIMEOUT_S,
    *,
    alive: Callable[[], bool] | None = None,
    brokers: Iterable[int] = (),
) -> None:
    """Return once the cluster at ``settings.bootstrap_servers`` answers a metadata request
    that lists every node id in ``brokers`` (or, with none given, any broker at all).

    Raises :class:`BrokerError` after ``timeout`` seconds, or as soon as ``alive()``
    (if given, e.g. "the broker processes have not exited") returns False.
    """
    admin = quiet_admin(settings)
    wanted = set(brokers)
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while True:
        if alive is not None and not alive():
            raise BrokerError(f"a broker stopped before {settings.bootstrap_servers} answered")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerError(
                f"no metadata from {settings.bootstrap_servers} within {timeout:g} s: {last_error}"
            )
        # Short attempts, so that a broker dying during startup is noticed within a second.
        try:
            metadata = admin.list_topics(timeout=min(remaining, 1.0))
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            last_error = error.str() if isinstance(error, KafkaError) else str(exc)
            time.sleep(0.1)
            continue
        # A broker answers before it has registered itself; only a listing is ready.
        registered = set(metadata.brokers)
        if registered and wanted <= registered:
            return
        missing = sorted(wanted - registered)
        last_error = f"brokers {missing} not registered yet" if registered else "no brokers yet"
        time.sleep(0.2)


def _cluster_answers(settings: Settings, timeout: float) -> tuple[bool, str]:
    try:
        wait_for_metadata(settings, timeout)
    except BrokerError as exc:
        return False, str(exc)
    return True, "it answers metadata requests"


# --- the cluster -----------------------------------------------------------------------


class LocalCluster:
    """Fetches, configures, starts, stops and restarts Riverbed's local Kafka cluster.

    ``dist_dir`` (default: ``RIVERBED_KAFKA_DIST``) names a directory holding an
    already fetched ``libs/`` (see :mod:`riverbed.kafka_jars`).
    """

    def __init__(self, settings: Settings, *, dist_dir: Path | None = None) -> None:
        self.settings = settings
        self.jars = KafkaJars(settings, dist_dir=dist_dir)
        # An external cluster's brokers are not ours to name: kafka_health asks it.
        self.nodes = cluster_nodes(settings) if settings.manages_local_broker else ()

    @property
    def kafka_dir(self) -> Path:
        return self.settings.kafka_dir

    @property
    def shape_file(self) -> Path:
        """The cluster id and node count the nodes were formatted with."""
        return self.kafka_dir / "cluster.json"

    def node(self, node_id: int) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise BrokerError(
            f"no broker {node_id}: the local cluster has brokers 1-{len(self.nodes)} "
            "(RIVERBED_KAFKA_BROKERS)"
        )

    # --- status ------------------------------------------------------------------------

    def status(self) -> ClusterStatus:
        """Which nodes run (or, for an external cluster, whether it answers)."""
        if not self.settings.manages_local_broker:
            return self._external("Riverbed runs no local broker")
        # No lock: status must answer even while a start is waiting for the nodes.
        # It therefore leaves stale pid files alone; start and stop clean them.
        return self._report(self._states(clean_stale=False), "running")

    # --- start -------------------------------------------------------------------------

    def start(
        self, timeout: float = START_TIMEOUT_S, *, only: Iterable[int] | None = None
    ) -> ClusterStatus:
        """Start every node that is not running (or just those in ``only``) and return once
        they are registered with the cluster; a no-op when they already run."""
        if not self.settings.manages_local_broker:
            return self._external("no local broker started")
        self._check_settings()
        wanted = [self.node(n) for n in only] if only is not None else list(self.nodes)
        with self._lock():
            states = self._states(clean_stale=True)
            down = [s.node for s in states if not s.running and s.node in wanted]
            if not down:
                return self._report(states, "already running")
            started = time.monotonic()
            self._start_nodes(down, timeout)
        log.info("Kafka ready in %.1f s", time.monotonic() - started, extra={"nodes": len(down)})
        names = "" if len(down) == len(self.nodes) else " " + ", ".join(n.name for n in down)
        return self._report(self._states(clean_stale=False), f"started{names}")

    def _start_nodes(self, nodes: list[Node], timeout: float) -> None:
        """Launch ``nodes`` and wait until they are registered; the lock is held."""
        self._check_layout()
        for node in nodes:
            self._check_ports_free(node)
        self.jars.fetch()
        if self.settings.kafka_secure:
            kafka_security.ensure_secrets(self.settings)
        for node in nodes:
            node.logs_dir.mkdir(parents=True, exist_ok=True)
            # Private: in secured mode it holds the admin's and the keystore's passwords.
            text = render_server_properties(self.settings, node)
            write_atomically(node.config_path, text, private=True)
        self._format_once(nodes)
        # server.log outlives starts: remember where this start's lines begin.
        marks = {node.id: _size(node.server_log) for node in nodes}
        launched = [(node, self._launch(node)) for node in nodes]
        try:
            wait_for_metadata(
                self.settings,
                timeout,
                alive=lambda: all(p.poll() is None for _, p in launched),
                brokers=[node.id for node in nodes],
            )
        except BrokerError as exc:
            reasons = []
            for node, process in launched:
                exit_code = process.poll()
                if exit_code is None:
                    _terminate(process.pid, timeout=10.0)
                else:
                    _launched.pop(process.pid, None)
                    reasons.append(f"{node.name} exited with code {exit_code} while starting")
                node.pid_file.unlink(missing_ok=True)
            reason = "; ".join(reasons) or f"{exc}; stopped what had started"
            tails = "\n".join(self._log_tail(node, marks[node.id]) for node in nodes)
            raise BrokerError(f"{reason}.\n{tails}") from None
        if self.settings.kafka_secure:
            kafka_security.ensure_users_and_acls(self.settings)

    def _check_settings(self) -> None:
        if self.settings.kafka_security_protocol != "PLAINTEXT":
            raise BrokerError(
                "the local cluster sets its own security (RIVERBED_KAFKA_SECURE), but "
                f"RIVERBED_KAFKA_SECURITY_PROTOCOL={self.settings.kafka_security_protocol}: "
                "unset it, or name your secured cluster with RIVERBED_KAFKA_BOOTSTRAP"
            )

    def _check_layout(self) -> None:
        """The nodes on disk were formatted for this many nodes; older layouts move in."""
        legacy = self.kafka_dir / "data"
        if (legacy / "meta.properties").is_file():
            self._adopt_single_node_layout(legacy)
        if not self.shape_file.is_file():
            return
        shape = json.loads(self.shape_file.read_text())
        formatted = shape["brokers"]
        secure = shape.get("secure", False)
        if secure != self.settings.kafka_secure:
            mode, other = ("secured", "false") if secure else ("plaintext", "true")
            raise BrokerError(
                f"the cluster in {self.kafka_dir} was formatted {mode}, and its users and "
                f"listeners are fixed then, but RIVERBED_KAFKA_SECURE={other}. Start it as it "
                f"was formatted (RIVERBED_KAFKA_SECURE={'true' if secure else 'false'}), or "
                f"stop it and delete {self.kafka_dir}/node-* and {self.shape_file.name} to "
                "start a new cluster (its topics are lost)."
            )
        if formatted != len(self.nodes):
            raise BrokerError(
                f"RIVERBED_KAFKA_BROKERS={len(self.nodes)}, but the cluster in {self.kafka_dir} "
                f"was formatted with {formatted} node(s), and a KRaft quorum's voters are fixed "
                f"when it is formatted. Set RIVERBED_KAFKA_BROKERS={formatted}, or stop it "
                f"and delete {self.kafka_dir}/node-* and {self.shape_file.name} to start a new "
                "cluster (its topics are lost)."
            )

    def _adopt_single_node_layout(self, legacy: Path) -> None:
        # Riverbed before clusters kept one node's data in kafka/data.
        old_pid = self.kafka_dir / "broker.pid"
        if old_pid.is_file():
            with contextlib.suppress(ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
                if MAIN_CLASS in psutil.Process(int(old_pid.read_text().strip())).cmdline():
                    raise BrokerError(
                        f"a broker started by an older Riverbed runs from {legacy} (pid file "
                        f"{old_pid}): stop it (kill $(cat {old_pid})) and start again"
                    )
        if len(self.nodes) != 1:
            raise BrokerError(
                f"{legacy} holds a single-node cluster of an older Riverbed. Set "
                "RIVERBED_KAFKA_BROKERS=1 to keep using it, or delete it (its topics are "
                f"lost) and start a cluster of {len(self.nodes)} nodes"
            )
        node = self.nodes[0]
        node.dir.mkdir(parents=True, exist_ok=True)
        legacy.rename(node.data_dir)
        cluster_id = (self.kafka_dir / "cluster.id").read_text().strip()
        shape = {"cluster_id": cluster_id, "brokers": 1}
        write_atomically(self.shape_file, json.dumps(shape), private=True)
        log.info("moved %s to %s (the cluster layout)", legacy, node.data_dir)

    def _check_ports_free(self, node: Node) -> None:
        moves = {
            "client": "set RIVERBED_KAFKA_PORT (node n takes that port + n - 1)",
            "controller": "set RIVERBED_KAFKA_CONTROLLER_PORT (node n takes that port + n - 1; "
            "by default the controller ports follow the last client port)",
            "metrics": "set RIVERBED_KAFKA_METRICS_PORT (node n takes that port + n - 1; "
            "by default the metrics ports follow the last controller port)",
        }
        ports = (
            (node.client_port, "client"),
            (node.controller_port, "controller"),
            (node.metrics_port, "metrics"),
        )
        for port, role in ports:
            if port_is_free(port):
                continue
            raise BrokerError(
                f"port {port} ({node.name}'s {role} port) is already in use by "
                f"{port_holder(port)}. Stop that process, or move Riverbed's cluster: "
                f"{moves[role]}. To use a Kafka cluster that already runs instead, set "
                "RIVERBED_KAFKA_BOOTSTRAP."
            )

    def _format_once(self, nodes: list[Node]) -> None:
        # Formatting writes meta.properties; its presence is what "formatted" means.
        unformatted = [n for n in nodes if not (n.data_dir / "meta.properties").is_file()]
        if not unformatted:
            return
        cluster_id = self._cluster_id()
        for node in unformatted:
            log.info("formatting KRaft storage of %s (cluster id %s) ...", node.name, cluster_id)
            args = ["format", "-t", cluster_id, "-c", str(node.config_path)]
            if self.settings.kafka_secure:
                args += kafka_security.format_arguments(self.settings)
            self.jars.run(STORAGE_TOOL, *args, private=self.settings.kafka_secure)

    def _cluster_id(self) -> str:
        if self.shape_file.is_file():
            return json.loads(self.shape_file.read_text())["cluster_id"]
        cluster_id = random_cluster_id()
        shape = {
            "cluster_id": cluster_id,
            "brokers": len(self.nodes),
            "secure": self.settings.kafka_secure,
        }
        write_atomically(self.shape_file, json.dumps(shape) + "\n", private=True)
        return cluster_id

    def _launch(self, node: Node) -> subprocess.Popen[bytes]:
        command = [
            java(),
            *jvm_options(self.settings, node, self.jars.jmx_exporter_agent()),
            "-cp",
            self.jars.java_classpath(),
            MAIN_CLASS,
            str(node.config_path),
        ]
        log.info("starting Kafka %s: %s ...", self.settings.kafka_version, node.name)
        # A session of its own: the node outlives the command that started it, and a
        # Ctrl-C in that command's terminal does not reach it.
        with node.console_log.open("wb") as console:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=node.dir,
                start_new_session=True,
                preexec_fn=_stop_signals_to_default if _stop_signals_ignored() else None,
            )
        _launched[process.pid] = process
        write_atomically(node.pid_file, f"{process.pid}\n", private=True)
        return process

    def _log_tail(self, node: Node, server_log_mark: int) -> str:
        """The last lines this start of ``node`` wrote to its console and server.log."""
        parts = []
        for path, mark in ((node.console_log, 0), (node.server_log, server_log_mark)):
            lines = _tail(path, LOG_TAIL_LINES, start=mark)
            if lines:
                parts.append(f"--- last lines of {path} ---\n" + "\n".join(lines))
        return "\n".join(parts) or f"({node.name} logged nothing; see {node.logs_dir})"

    # --- stop --------------------------------------------------------------------------

    def stop(
        self, timeout: float = STOP_TIMEOUT_S, *, only: Iterable[int] | None = None
    ) -> ClusterStatus:
        """Stop the nodes (or those in ``only``): controlled shutdown, SIGKILL after
        ``timeout``; data is kept."""
        if not self.settings.manages_local_broker:
            return self._external("no local broker to stop")
        wanted = [self.node(n) for n in only] if only is not None else list(self.nodes)
        with self._lock():
            running = [s for s in self._states(clean_stale=True) if s.running and s.node in wanted]
            if not running:
                return ClusterStatus(False, self.settings.bootstrap_servers, "not running")
            outcomes = self._stop_nodes(running, timeout)
        return ClusterStatus(
            running=False,
            bootstrap=self.settings.bootstrap_servers,
            message="; ".join(outcomes) + f"; data kept in {self.kafka_dir}",
            nodes=self._states(clean_stale=False),
        )

    def _stop_nodes(self, states: list[NodeState], timeout: float) -> list[str]:
        """SIGTERM every node at once, then wait for each; the lock is held."""
        for state in states:
            log.info("stopping %s (pid %d) ...", state.node.name, state.pid)
        graceful = _terminate_all([s.pid for s in states if s.pid is not None], timeout)
        outcomes = []
        for state in states:
            state.node.pid_file.unlink(missing_ok=True)
            how = (
                "stopped"
                if graceful[state.pid]
                else f"killed (no controlled shutdown within {timeout:.0f} s)"
            )
            outcomes.append(f"{state.node.name} {how} (was pid {state.pid})")
        return outcomes

    # --- restart -----------------------------------------------------------------------

    def restart(
        self,
        *,
        rolling: bool = False,
        timeout: float = START_TIMEOUT_S,
        in_sync_timeout: float = IN_SYNC_TIMEOUT_S,
        progress: Callable[[str], None] = log.info,
    ) -> ClusterStatus:
        """Restart the cluster. ``rolling``: one node at a time, each only once every
        partition is fully in sync again, so clients keep working throughout."""
        if not self.settings.manages_local_broker:
            return self._external("no local broker to restart")
        if not rolling:
            self.stop()
            return self.start(timeout)
        self.start(timeout)  # a rolling restart of a cluster that is partly down starts it
        leader = cluster_health(self.settings, expected=self.nodes).quorum_leader
        # The quorum leader last: one controller election instead of two.
        order = sorted(self.nodes, key=lambda n: n.id == leader)
        for node in order:
            wait_in_sync(self.settings, in_sync_timeout, progress=progress)
            progress(f"restarting {node.name}")
            with self._lock():
                states = [s for s in self._states(clean_stale=True) if s.node == node]
                if states[0].running:
                    self._stop_nodes(states, STOP_TIMEOUT_S)
                self._start_nodes([node], timeout)
        wait_in_sync(self.settings, in_sync_timeout, progress=progress)
        return self._report(self._states(clean_stale=False), "restarted one node at a time")

    # --- helpers -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise start/stop across processes (the CLI and Dagster may both try)."""
        self.kafka_dir.mkdir(parents=True, exist_ok=True)
        with (self.kafka_dir / "cluster.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _states(self, *, clean_stale: bool) -> tuple[NodeState, ...]:
        return tuple(
            NodeState(n, self._running_pid(n, clean_stale=clean_stale)) for n in self.nodes
        )

    def _running_pid(self, node: Node, *, clean_stale: bool) -> int | None:
        """The pid in the node's pid file if it is that node's live JVM; else None."""
        try:
            pid = int(node.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            pid = None
        if pid is not None and _is_node_process(pid, node):
            return pid
        if clean_stale and node.pid_file.exists():
            log.info("removing stale pid file %s", node.pid_file)
            node.pid_file.unlink(missing_ok=True)
        return None

    def _report(self, states: tuple[NodeState, ...], state: str) -> ClusterStatus:
        version = self.settings.kafka_version
        up = [s for s in states if s.running]
        lines = [
            f"{s.node.name}: " + (f"running (pid {s.pid})" if s.running else "DOWN") for s in states
        ]
        if len(up) == len(states):
            servers = self.settings.bootstrap_servers
            head = f"{state}: Kafka {version}, {len(states)} broker(s) on {servers}"
        elif up:
            head = f"{len(up)} of {len(states)} brokers running (Kafka {version})"
        else:
            fetched = "" if self.jars.is_fetched() else " (not fetched yet)"
            head = (
                f"not running; Kafka {version}{fetched} would run {len(states)} broker(s) on "
                f"{self.settings.bootstrap_servers}"
            )
        lines.append(f"data in {self.kafka_dir}")
        return ClusterStatus(
            running=len(up) == len(states),
            bootstrap=self.settings.bootstrap_servers,
            message="\n".join([head, *("  " + line for line in lines)]),
            nodes=states,
        )

    def _external(self, action: str) -> ClusterStatus:
        bootstrap = self.settings.bootstrap_servers
        answers, detail = _cluster_answers(self.settings, timeout=5.0)
        return ClusterStatus(
            running=answers,
            bootstrap=bootstrap,
            message=f"external cluster at {bootstrap}; {action} ({detail})",
        )


def _is_node_process(pid: int, node: Node) -> bool:
    # The pid may have been reused by any process since; only a kafka.Kafka JVM
    # reading this very server.properties is ours.
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            _reap(pid)
            return False
        cmdline = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return MAIN_CLASS in cmdline and str(node.config_path) in cmdline


def _stop_signals_ignored() -> bool:
    """Whether this process ignores SIGTERM or SIGINT, which a child inherits.

    A JVM that starts with SIGTERM ignored never installs its shutdown hook: every stop
    would wait out STOP_TIMEOUT_S and kill the node. It happens to a process started in
    the background (its SIGINT ignored) once Dagster has run in it: Dagster points
    SIGTERM at SIGINT's handler.
    """
    ignored = signal.SIG_IGN
    return signal.getsignal(signal.SIGTERM) == ignored or signal.getsignal(signal.SIGINT) == ignored


def _stop_signals_to_default() -> None:
    """In the child, before exec: SIGTERM and SIGINT reach the JVM's handlers."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def random_cluster_id() -> str:
    """A new KRaft cluster id, as ``kafka-storage.sh random-uuid`` prints one (Kafka's
    ``Uuid.randomUuid``: a random UUID, base64url without padding, never starting with
    "-"), without starting a JVM for it."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


# --- processes, ports, files -----------------------------------------------------------


# Below Linux's default ephemeral range (32768-60999). A port in that range can be taken
# between a broker's stop and its next start by any outgoing connection's local end,
# even by a client's own reconnect to the stopped broker (a TCP self-connect); CI saw a
# restarted test broker fail with "Address already in use" that way.
_UNEPHEMERAL_PORTS = range(20000, 32000)


def free_port_range(count: int, search: range = _UNEPHEMERAL_PORTS) -> int:
    """A first port p with p .. p + count - 1 all free on 127.0.0.1, picked at random
    from ``search`` (for tests and benchmarks that start services of their own)."""
    starts = list(search[: max(len(search) - count, 1)])
    for port in random.sample(starts, min(len(starts), 400)):
        if all(port_is_free(p) for p in range(port, port + count)):
            return port
    raise BrokerError(f"no {count} free consecutive ports in {search.start}-{search.stop - 1}")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the JVM does: connections of a previous run lingering in TIME_WAIT
        # do not stop the broker from binding, so they must not stop us either.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def listening_pids(ports: Collection[int]) -> list[int]:
    """The processes listening on any of ``ports``, as far as this user may see."""
    with contextlib.suppress(psutil.AccessDenied):
        return sorted(
            {
                conn.pid
                for conn in psutil.net_connections(kind="tcp")
                if conn.status == psutil.CONN_LISTEN
                and conn.laddr
                and conn.laddr.port in ports
                and conn.pid is not None
            }
        )
    return []


def port_holder(port: int) -> str:
    """Who listens on ``port``, as far as this user may see."""
    with contextlib.suppress(psutil.AccessDenied, psutil.NoSuchProcess):
        for pid in listening_pids([port]):
            process = psutil.Process(pid)
            command = " ".join(" ".join(process.cmdline()).split()) or process.name()
            return f"pid {pid} ({command[:100]})"
    return "another process"


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM (Kafka's controlled shutdown), SIGKILL after ``timeout``; True if it obeyed."""
    return _terminate_all([pid], timeout)[pid]


def _terminate_all(pids: list[int], timeout: float) -> dict[int, bool]:
    """SIGTERM every pid at once, SIGKILL whichever is left after ``timeout``.

    At once rather than one by one: a node shutting down while the others still run
    first moves its partition leadership away, and the next node then has more to
    move; together they stop in about the time one takes.
    """
    processes: dict[int, psutil.Process | None] = {}
    for pid in pids:
        try:
            processes[pid] = psutil.Process(pid)
            processes[pid].terminate()
        except psutil.NoSuchProcess:
            processes[pid] = None
    deadline = time.monotonic() + timeout
    obeyed = {}
    for pid, process in processes.items():
        child = _launched.pop(pid, None)
        if process is None:
            _wait(child, None, timeout=1.0)
            obeyed[pid] = True
            continue
        obeyed[pid] = _wait(child, process, max(deadline - time.monotonic(), 0.1))
        if not obeyed[pid]:
            log.warning("Kafka node (pid %d) ignored SIGTERM for %.0f s; killing it", pid, timeout)
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
            _wait(child, process, timeout=10.0)
    return obeyed


def _wait(
    child: subprocess.Popen[bytes] | None, process: psutil.Process | None, timeout: float
) -> bool:
    """Wait for exit; through the Popen when we launched it, so that it is reaped."""
    try:
        if child is not None:
            child.wait(timeout=timeout)
        elif process is not None:
            process.wait(timeout=timeout)
    except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
        return False
    return True


def _reap(pid: int) -> None:
    child = _launched.pop(pid, None)
    if child is not None:
        child.wait(timeout=1.0)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _tail(path: Path, lines: int, *, start: int = 0) -> list[str]:
    """The last lines of ``path`` written after byte ``start``."""
    size = _size(path)
    if size == 0:
        return []
    if size < start:  # rolled over since: all of it is new
        start = 0
    with path.open("rb") as handle:
        # The end is enough: server.log may be megabytes long.
        handle.seek(max(start, size - 64 * 1024))
        text = handle.read().decode("utf-8", errors="replace")
    return last_lines(text, lines)
