"""The local single-node Apache Kafka broker that Riverbed fetches and runs.

With ``RIVERBED_KAFKA_BOOTSTRAP`` unset, Riverbed runs one KRaft node (broker and
controller in one JVM) on 127.0.0.1. Everything it needs lives under
``settings.kafka_dir``::

    kafka/
      dist/<version>/libs/   the jars, fetched once from Maven Central with mvn
      server.properties      rewritten from the settings on every start
      cluster.id             the KRaft cluster id, chosen on the first start
      data/                  log.dirs: topics, consumer offsets, the metadata log
      logs/server.log        the broker's own log (INFO, rolled by size)
      logs/broker.out        its console (warnings, JVM errors) of the last start
      broker.pid             pid of the running broker
      broker.lock            serialises start and stop between processes

The jars: set ``RIVERBED_KAFKA_DIST`` to a directory that holds an already
fetched ``libs/`` (a shared cache for CI or tests, for example) and it is used as
it is; then nothing is fetched, and a missing jar is an error rather than a
download.

With ``RIVERBED_KAFKA_BOOTSTRAP`` set, Riverbed uses that cluster: ``start`` and
``stop`` do nothing and say so, and ``status`` tells whether the cluster answers.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from riverbed.settings import Settings

log = logging.getLogger("riverbed.broker")

DIST_ENV = "RIVERBED_KAFKA_DIST"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 30
HOST = "127.0.0.1"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"

_DIST_FILES = Path(__file__).with_name("kafka_dist")
POM = _DIST_FILES / "pom.xml"
LOG4J_CONFIG = _DIST_FILES / "log4j2.yaml"

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

# Brokers launched by this Python process: stop() waits on the Popen itself, so
# the child is reaped (no zombie that still looks alive, no ResourceWarning).
_launched: dict[int, subprocess.Popen[bytes]] = {}


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or stopped; says why and what to do."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    message: str


# --- configuration ---------------------------------------------------------------------


def server_properties(settings: Settings) -> dict[str, str]:
    """The broker's configuration: one combined KRaft node, replication factor 1 everywhere."""
    client = f"{HOST}:{settings.kafka_port}"
    controller = f"{HOST}:{settings.controller_port}"
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        # A static quorum rather than the dynamic one (controller.quorum.bootstrap.servers
        # with format --standalone): the dynamic one records the controller's endpoint in
        # the metadata log at format time, so changing the port later would strand the data.
        "controller.quorum.voters": f"1@{controller}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://{client},CONTROLLER://{controller}",
        "advertised.listeners": f"PLAINTEXT://{client}",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(settings.kafka_dir / "data"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        # Topics are declared (riverbed's topic catalog); a typo must not create one.
        "auto.create.topics.enable": "false",
        # The internal topics default to replication factor 3, which one node cannot host.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Nobody else will join: do not make the first consumer wait 3 s for them.
        "group.initial.rebalance.delay.ms": "0",
    }


def render_server_properties(settings: Settings) -> str:
    """server.properties as written to disk."""
    props = server_properties(settings)
    lines = ["# Written by riverbed.broker on every start: change RIVERBED_* settings, not this."]
    # Backslash is the escape character of Java properties files (think paths).
    lines += [key + "=" + value.replace("\\", "\\\\") for key, value in props.items()]
    return "\n".join(lines) + "\n"


def initial_heap(max_heap: str) -> str:
    """-Xms for a given -Xmx: half of it, so an idle dev broker does not claim the lot."""
    amount, unit = int(max_heap[:-1]), max_heap[-1].lower()
    megabytes = amount * 1024 if unit == "g" else amount
    return f"{max(megabytes // 2, 1)}m"


def jvm_options(settings: Settings) -> list[str]:
    return [
        f"-Xmx{settings.kafka_heap}",
        f"-Xms{initial_heap(settings.kafka_heap)}",
        *_GC_OPTIONS,
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={settings.kafka_dir / 'logs'}",
    ]


# --- waiting for a cluster -------------------------------------------------------------


class _QuietLibrdkafkaLog:
    """Receives librdkafka's log lines at DEBUG.

    While a broker is starting, librdkafka reports each refused connection (every
    ~50 ms) at ERROR on stderr; those are expected here and would drown the progress.
    """

    def log(self, level: int, msg: str, *args: object) -> None:
        log.debug(msg, *args)


def wait_for_metadata(
    settings: Settings,
    timeout: float = START_TIMEOUT_S,
    *,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Return once the cluster at ``settings.bootstrap_servers`` answers a metadata request.

    Raises :class:`BrokerError` after ``timeout`` seconds, or as soon as ``alive()``
    (if given, e.g. "the broker process has not exited") returns False.
    """
    admin = AdminClient({**settings.kafka_client_config(), "logger": _QuietLibrdkafkaLog()})
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while True:
        if alive is not None and not alive():
            raise BrokerError(
                f"the broker stopped before it answered on {settings.bootstrap_servers}"
            )
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
        # A broker can answer before it has registered itself; only a non-empty list is ready.
        if metadata.brokers:
            return
        last_error = "metadata lists no brokers yet"
        time.sleep(0.2)


def _cluster_answers(settings: Settings, timeout: float) -> tuple[bool, str]:
    try:
        wait_for_metadata(settings, timeout)
    except BrokerError as exc:
        return False, str(exc)
    return True, "it answers metadata requests"


# --- the broker ------------------------------------------------------------------------


class LocalBroker:
    """Fetches, configures, starts and stops Riverbed's local Kafka broker.

    ``dist_dir`` (or the ``RIVERBED_KAFKA_DIST`` environment variable) names a
    directory holding an already fetched ``libs/``; by default the jars live in
    ``settings.kafka_dir / "dist" / settings.kafka_version``.
    """

    def __init__(self, settings: Settings, *, dist_dir: Path | None = None) -> None:
        self.settings = settings
        override = dist_dir or _dist_from_environment()
        self._dist_is_shared = override is not None
        self.dist_dir = override or settings.kafka_dir / "dist" / settings.kafka_version

    # --- where things are -----------------------------------------------------------

    @property
    def kafka_dir(self) -> Path:
        return self.settings.kafka_dir

    @property
    def libs_dir(self) -> Path:
        """The broker's and Kafka tools' jars (run them with ``-cp java_classpath()``)."""
        return self.dist_dir / "libs"

    @property
    def data_dir(self) -> Path:
        return self.kafka_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.kafka_dir / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def console_log(self) -> Path:
        """The broker's stdout and stderr (warnings, JVM errors) since its last start."""
        return self.logs_dir / "broker.out"

    @property
    def config_path(self) -> Path:
        return self.kafka_dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.kafka_dir / "broker.pid"

    @property
    def cluster_id_file(self) -> Path:
        return self.kafka_dir / "cluster.id"

    def java_classpath(self) -> str:
        """The ``-cp`` argument for Kafka's classes; java expands the ``*`` itself."""
        return str(self.libs_dir / "*")

    def is_fetched(self) -> bool:
        return (self.libs_dir / f"kafka_2.13-{self.settings.kafka_version}.jar").is_file()

    # --- fetch -------------------------------------------------------------------------

    def fetch(self) -> Path:
        """Make sure Kafka's jars are in :attr:`libs_dir`, downloading them once; return it."""
        if self.is_fetched():
            return self.libs_dir
        if self._dist_is_shared:
            raise BrokerError(
                f"{DIST_ENV}={self.dist_dir}: no kafka_2.13-{self.settings.kafka_version}.jar "
                f"in {self.libs_dir}. Point it at a directory holding a fetched libs/, "
                "or unset it to let Riverbed fetch Kafka itself."
            )
        version = self.settings.kafka_version
        log.info("fetching Apache Kafka %s from Maven Central (once) ...", version)
        started = time.monotonic()
        self.dist_dir.parent.mkdir(parents=True, exist_ok=True)
        # Download beside the target and rename into place: a fetch cut short leaves
        # only a temporary directory, never a dist that looks complete.
        with tempfile.TemporaryDirectory(prefix=f".{version}-", dir=self.dist_dir.parent) as tmp:
            staging = Path(tmp) / "dist"
            _run_maven(version, staging / "libs", cwd=Path(tmp))
            if not (staging / "libs" / f"kafka_2.13-{version}.jar").is_file():
                raise BrokerError(f"Maven finished but fetched no kafka_2.13-{version}.jar")
            try:
                staging.rename(self.dist_dir)
            except OSError:
                # Another process fetched the same version meanwhile; theirs is as good.
                if not self.is_fetched():
                    raise
        jars = list(self.libs_dir.glob("*.jar"))
        size_mb = sum(j.stat().st_size for j in jars) / 1e6
        log.info(
            "fetched Kafka %s: %d jars, %.0f MB, in %.1f s",
            version,
            len(jars),
            size_mb,
            time.monotonic() - started,
        )
        return self.libs_dir

    # --- status ------------------------------------------------------------------------

    def status(self) -> BrokerStatus:
        """Whether the local broker runs (or, for an external cluster, answers)."""
        if not self.settings.manages_local_broker:
            return self._external("Riverbed runs no local broker")
        # No lock: status must answer even while a start is waiting for the broker.
        # It therefore leaves a stale pid file alone; start and stop clean it.
        pid = self._running_pid(clean_stale=False)
        if pid is not None:
            return self._running(pid, "running")
        fetched = "" if self.is_fetched() else " (not fetched yet)"
        return BrokerStatus(
            running=False,
            pid=None,
            bootstrap=self.settings.bootstrap_servers,
            message=(
                f"not running; Kafka {self.settings.kafka_version}{fetched} would listen on "
                f"{self.settings.bootstrap_servers}, data in {self.data_dir}"
            ),
        )

    # --- start -------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_S) -> BrokerStatus:
        """Start the broker and return once it answers; a no-op when it already runs."""
        if not self.settings.manages_local_broker:
            return self._external("no local broker started")
        self._check_settings()
        with self._lock():
            pid = self._running_pid(clean_stale=True)
            if pid is not None:
                return self._running(pid, "already running")
            self._check_ports_free()
            self.fetch()
            self._write_config()
            self._format_storage_once()
            started = time.monotonic()
            # server.log outlives starts: remember where this start's lines begin.
            log_mark = _size(self.server_log)
            broker = self._launch()
            self._await_ready(broker, timeout, log_mark)
        log.info("Kafka broker ready in %.1f s", time.monotonic() - started)
        return self._running(broker.pid, "started")

    def _check_settings(self) -> None:
        if self.settings.kafka_security_protocol != "PLAINTEXT":
            raise BrokerError(
                "the local broker speaks PLAINTEXT only, but RIVERBED_KAFKA_SECURITY_PROTOCOL="
                f"{self.settings.kafka_security_protocol}: unset it, or name your secured "
                "cluster with RIVERBED_KAFKA_BOOTSTRAP"
            )
        if self.settings.kafka_port == self.settings.controller_port:
            raise BrokerError(
                f"RIVERBED_KAFKA_CONTROLLER_PORT={self.settings.controller_port} is the client "
                "port too; the controller needs a port of its own"
            )

    def _check_ports_free(self) -> None:
        client, controller = self.settings.kafka_port, self.settings.controller_port
        moves = {
            "client": "set RIVERBED_KAFKA_PORT (the controller takes the port after it, "
            "unless RIVERBED_KAFKA_CONTROLLER_PORT says otherwise)",
            "controller": "set RIVERBED_KAFKA_CONTROLLER_PORT, or RIVERBED_KAFKA_PORT "
            "(the controller takes the port after it)",
        }
        for port, role in ((client, "client"), (controller, "controller")):
            if _port_is_free(port):
                continue
            raise BrokerError(
                f"port {port} (the local Kafka broker's {role} port) is already in use by "
                f"{_port_holder(port)}. Stop that process, or move Riverbed's broker: "
                f"{moves[role]}. To use a Kafka cluster that already runs instead, set "
                "RIVERBED_KAFKA_BOOTSTRAP."
            )

    def _write_config(self) -> None:
        self.config_path.write_text(render_server_properties(self.settings))

    def _format_storage_once(self) -> None:
        # Formatting writes meta.properties; its presence is what "formatted" means.
        if (self.data_dir / "meta.properties").is_file():
            return
        cluster_id = self._cluster_id()
        log.info("formatting KRaft storage in %s (cluster id %s) ...", self.data_dir, cluster_id)
        self._run_tool(STORAGE_TOOL, "format", "-t", cluster_id, "-c", str(self.config_path))

    def _cluster_id(self) -> str:
        if self.cluster_id_file.is_file():
            return self.cluster_id_file.read_text().strip()
        cluster_id = self._run_tool(STORAGE_TOOL, "random-uuid").strip().splitlines()[-1]
        _write_atomically(self.cluster_id_file, cluster_id + "\n")
        return cluster_id

    def _run_tool(self, *args: str) -> str:
        """Run a Kafka command-line tool; return its stdout."""
        # No log4j2 configuration: log4j2's built-in default prints only errors,
        # which is all we want from a one-shot tool.
        command = [_java(), "-cp", self.java_classpath(), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            output = "\n".join(_last_lines(done.stdout + done.stderr, LOG_TAIL_LINES))
            raise BrokerError(f"{' '.join(args[:2])} failed ({done.returncode}):\n{output}")
        return done.stdout

    def _launch(self) -> subprocess.Popen[bytes]:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        command = [
            _java(),
            *jvm_options(self.settings),
            "-cp",
            self.java_classpath(),
            MAIN_CLASS,
            str(self.config_path),
        ]
        log.info(
            "starting Kafka %s on %s ...",
            self.settings.kafka_version,
            self.settings.bootstrap_servers,
        )
        # A session of its own: the broker outlives the command that started it, and a
        # Ctrl-C in that command's terminal does not reach it.
        with self.console_log.open("wb") as console:
            broker = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.kafka_dir,
                start_new_session=True,
            )
        _launched[broker.pid] = broker
        _write_atomically(self.pid_file, f"{broker.pid}\n")
        return broker

    def _await_ready(self, broker: subprocess.Popen[bytes], timeout: float, log_mark: int) -> None:
        try:
            wait_for_metadata(self.settings, timeout, alive=lambda: broker.poll() is None)
        except BrokerError as exc:
            exit_code = broker.poll()
            if exit_code is None:
                _terminate(broker.pid, timeout=10.0)
                reason = f"{exc}; stopped it"
            else:
                _launched.pop(broker.pid, None)
                reason = f"the broker exited with code {exit_code} while starting"
            self.pid_file.unlink(missing_ok=True)
            raise BrokerError(f"{reason}.\n{self._log_tail(log_mark)}") from None

    def _log_tail(self, server_log_mark: int) -> str:
        """The last lines this start wrote to the console (broker.out) and server.log."""
        parts = []
        for path, mark in ((self.console_log, 0), (self.server_log, server_log_mark)):
            lines = _tail(path, LOG_TAIL_LINES, start=mark)
            if lines:
                parts.append(f"--- last lines of {path} ---\n" + "\n".join(lines))
        return "\n".join(parts) or f"(the broker logged nothing; see {self.logs_dir})"

    # --- stop --------------------------------------------------------------------------

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> BrokerStatus:
        """Stop the broker (controlled shutdown, SIGKILL after ``timeout``); data is kept."""
        if not self.settings.manages_local_broker:
            return self._external("no local broker to stop")
        with self._lock():
            pid = self._running_pid(clean_stale=True)
            if pid is None:
                return BrokerStatus(False, None, self.settings.bootstrap_servers, "not running")
            log.info("stopping Kafka broker (pid %d) ...", pid)
            graceful = _terminate(pid, timeout)
            self.pid_file.unlink(missing_ok=True)
        how = "stopped" if graceful else f"killed (no controlled shutdown within {timeout:.0f} s)"
        return BrokerStatus(
            running=False,
            pid=None,
            bootstrap=self.settings.bootstrap_servers,
            message=f"{how} (was pid {pid}); data kept in {self.data_dir}",
        )

    # --- helpers -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise start/stop across processes (the CLI and Dagster may both try)."""
        self.kafka_dir.mkdir(parents=True, exist_ok=True)
        with (self.kafka_dir / "broker.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _running_pid(self, *, clean_stale: bool) -> int | None:
        """The pid in the pid file if it is this broker's live JVM; else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            pid = None
        if pid is not None and self._is_this_broker(pid):
            return pid
        if clean_stale and self.pid_file.exists():
            log.info("removing stale pid file %s", self.pid_file)
            self.pid_file.unlink(missing_ok=True)
        return None

    def _is_this_broker(self, pid: int) -> bool:
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
        return MAIN_CLASS in cmdline and str(self.config_path) in cmdline

    def _running(self, pid: int, state: str) -> BrokerStatus:
        return BrokerStatus(
            running=True,
            pid=pid,
            bootstrap=self.settings.bootstrap_servers,
            message=(
                f"{state}: Kafka {self.settings.kafka_version} (pid {pid}) on "
                f"{self.settings.bootstrap_servers}, data in {self.data_dir}"
            ),
        )

    def _external(self, action: str) -> BrokerStatus:
        bootstrap = self.settings.bootstrap_servers
        answers, detail = _cluster_answers(self.settings, timeout=5.0)
        return BrokerStatus(
            running=answers,
            pid=None,
            bootstrap=bootstrap,
            message=f"external cluster at {bootstrap}; {action} ({detail})",
        )


# --- processes, ports, files -----------------------------------------------------------


def _dist_from_environment() -> Path | None:
    # Read here rather than in riverbed.settings: it is a cache location for tests
    # and CI, not a setting of the platform.
    value = os.environ.get(DIST_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else None


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java not found: install a Java 17+ runtime, or set JAVA_HOME")
    return java


def _run_maven(version: str, libs: Path, *, cwd: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "mvn (Apache Maven) not found: Riverbed fetches Kafka's jars with it. Install "
            f"Maven, or set {DIST_ENV} to a directory holding already fetched jars in libs/"
        )
    command = [
        mvn, "-q", "-B", "-f", str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
        f"-Dkafka.version={version}",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        output = "\n".join(_last_lines(done.stdout + done.stderr, LOG_TAIL_LINES))
        raise BrokerError(f"fetching Kafka {version} with Maven failed:\n{output}")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the JVM does: connections of a previous run lingering in TIME_WAIT
        # do not stop the broker from binding, so they must not stop us either.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _port_holder(port: int) -> str:
    """Who listens on ``port``, as far as this user may see."""
    with contextlib.suppress(psutil.AccessDenied, psutil.NoSuchProcess):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid is None:
                    break
                process = psutil.Process(conn.pid)
                command = " ".join(" ".join(process.cmdline()).split()) or process.name()
                return f"pid {conn.pid} ({command[:100]})"
    return "another process"


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM (Kafka's controlled shutdown), SIGKILL after ``timeout``; True if it obeyed."""
    child = _launched.pop(pid, None)
    try:
        process = psutil.Process(pid)
        process.terminate()
    except psutil.NoSuchProcess:
        _wait(child, process=None, timeout=1.0)
        return True
    if _wait(child, process, timeout):
        return True
    log.warning("Kafka broker (pid %d) ignored SIGTERM for %.0f s; killing it", pid, timeout)
    with contextlib.suppress(psutil.NoSuchProcess):
        process.kill()
    _wait(child, process, timeout=10.0)
    return False


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


def _write_atomically(path: Path, text: str) -> None:
    # Readers (status from another process) never see a half-written file.
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    partial.replace(path)


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
    return _last_lines(text, lines)


def _last_lines(text: str, lines: int) -> list[str]:
    return list(deque((line for line in text.splitlines() if line.strip()), maxlen=lines))
