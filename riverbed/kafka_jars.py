"""Apache Kafka's jars, fetched once from Maven Central, and running its Java tools.

The local cluster (:mod:`riverbed.broker`) runs from these jars, and so do the
few operations the Python client cannot do: librdkafka (confluent-kafka 2.16)
has no API for partition reassignment or for describing the KRaft quorum, so
Riverbed runs Kafka's own ``ReassignPartitionsCommand`` and
``MetadataQuorumCommand`` for those, against any cluster, local or not.

The jars live in ``settings.kafka_dir/dist/<version>/libs``. Set
``RIVERBED_KAFKA_DIST`` (``settings.kafka_dist``) to a directory that holds an
already fetched ``libs/`` (a shared cache for CI or tests) and it is used as it
is: nothing is fetched, and a missing jar is an error rather than a download.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path

from riverbed.settings import Settings

log = logging.getLogger("riverbed.broker")

DIST_ENV = "RIVERBED_KAFKA_DIST"
LOG_TAIL_LINES = 30
TOOL_TIMEOUT_S = 120.0

# A tool lives a second or two: the client compiler only and the serial collector cost
# it a third less CPU than the JVM's server defaults (measured on MetadataQuorumCommand).
_TOOL_JVM_OPTIONS = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")

_DIST_FILES = Path(__file__).with_name("kafka_dist")
POM = _DIST_FILES / "pom.xml"
LOG4J_CONFIG = _DIST_FILES / "log4j2.yaml"
# Pinned in pom.xml too (jmx.exporter.version); the jar copy-dependencies names.
JMX_EXPORTER_JAR = "jmx_prometheus_javaagent-1.0.1.jar"


class KafkaJarsError(RuntimeError):
    """Kafka's jars could not be fetched, or one of its tools failed; says why."""


class KafkaJars:
    """Where Kafka's jars are, fetching them once, and running Kafka's tools from them."""

    def __init__(self, settings: Settings, *, dist_dir: Path | None = None) -> None:
        self.settings = settings
        override = dist_dir or settings.kafka_dist
        self._shared = override is not None
        self.dist_dir = override or settings.kafka_dir / "dist" / settings.kafka_version

    @property
    def libs_dir(self) -> Path:
        return self.dist_dir / "libs"

    def java_classpath(self) -> str:
        """The ``-cp`` argument for Kafka's classes; java expands the ``*`` itself."""
        return str(self.libs_dir / "*")

    def is_fetched(self) -> bool:
        kafka = self.libs_dir / f"kafka_2.13-{self.settings.kafka_version}.jar"
        return kafka.is_file() and (self.libs_dir / JMX_EXPORTER_JAR).is_file()

    def jmx_exporter_agent(self) -> Path:
        """The Prometheus JMX exporter's Java agent, fetched with Kafka's jars."""
        return self.fetch() / JMX_EXPORTER_JAR

    def fetch(self) -> Path:
        """Make sure Kafka's jars are in :attr:`libs_dir`, downloading them once; return it."""
        if self.is_fetched():
            return self.libs_dir
        version = self.settings.kafka_version
        if self._shared:
            raise KafkaJarsError(
                f"{DIST_ENV}={self.dist_dir}: no kafka_2.13-{version}.jar or "
                f"{JMX_EXPORTER_JAR} in {self.libs_dir}. Point it at a directory holding a "
                "libs/ fetched by this version of Riverbed, or unset it to let Riverbed "
                "fetch Kafka itself."
            )
        log.info("fetching Apache Kafka %s from Maven Central (once) ...", version)
        started = time.monotonic()
        self.dist_dir.parent.mkdir(parents=True, exist_ok=True)
        # Download beside the target and rename into place: a fetch cut short leaves
        # only a temporary directory, never a dist that looks complete.
        with tempfile.TemporaryDirectory(prefix=f".{version}-", dir=self.dist_dir.parent) as tmp:
            staging = Path(tmp) / "dist"
            _run_maven(version, staging / "libs", cwd=Path(tmp))
            for jar in (f"kafka_2.13-{version}.jar", JMX_EXPORTER_JAR):
                if not (staging / "libs" / jar).is_file():
                    raise KafkaJarsError(f"Maven finished but fetched no {jar}")
            try:
                staging.rename(self.dist_dir)
            except OSError:
                # Another process fetched the same version meanwhile (theirs is as good),
                # or an older Riverbed did, without a jar pinned since: replace that one.
                if not self.is_fetched():
                    self.dist_dir.rename(Path(tmp) / "older")
                    staging.rename(self.dist_dir)
        jars = list(self.libs_dir.glob("*.jar"))
        log.info(
            "fetched Kafka %s: %d jars, %.0f MB, in %.1f s",
            version,
            len(jars),
            sum(j.stat().st_size for j in jars) / 1e6,
            time.monotonic() - started,
        )
        return self.libs_dir

    def run(
        self,
        main_class: str,
        *args: str,
        timeout: float = TOOL_TIMEOUT_S,
        private: bool = False,
    ) -> str:
        """Run one of Kafka's command-line tools; return its stdout, raise on failure.

        ``private``: some argument is a secret. The tool's main class and arguments then
        go in a java @argfile (JDK 9+) readable by this user only and deleted after the
        run, instead of on the command line, which every user of the machine can read.
        """
        self.fetch()
        # No log4j2 configuration: log4j2's built-in default prints only errors,
        # which is all we want from a one-shot tool.
        command = [java(), *_TOOL_JVM_OPTIONS, "-cp", self.java_classpath()]
        with contextlib.ExitStack() as stack:
            if private:
                command.append("@" + str(stack.enter_context(_argfile(main_class, *args))))
            else:
                command += [main_class, *args]
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=timeout, check=False
                )
            except subprocess.TimeoutExpired:
                raise KafkaJarsError(
                    f"{main_class} did not finish within {timeout:.0f} s"
                ) from None
        if done.returncode != 0:
            output = "\n".join(last_lines(done.stdout + done.stderr, LOG_TAIL_LINES))
            tool = main_class.rsplit(".", 1)[-1]
            raise KafkaJarsError(
                f"{tool} {' '.join(args[:1])} failed ({done.returncode}):\n{output}"
            )
        return done.stdout

    def run_against_cluster(
        self, main_class: str, *args: str, client_overrides: Mapping[str, str] | None = None
    ) -> str:
        """Run a tool that talks to the cluster, as every Riverbed client does.

        The client settings (security, credentials) go in a ``--command-config``
        file readable by this user only and deleted afterwards, never on the
        command line, where any user of the machine could read a password.
        ``client_overrides``: more Java client properties for that file (timeouts).
        """
        with client_properties_file(self.settings, client_overrides) as config:
            return self.run(
                main_class,
                "--bootstrap-server",
                self.settings.bootstrap_servers,
                "--command-config",
                str(config),
                *args,
            )


def java_client_properties(settings: Settings) -> dict[str, str]:
    """The Java client's names for the admin's librdkafka settings (kafka_client_config())."""
    conf = settings.kafka_client_config()
    props = {"security.protocol": conf["security.protocol"]}
    if "sasl.mechanism" in conf:
        props["sasl.mechanism"] = conf["sasl.mechanism"]
        module = (
            "org.apache.kafka.common.security.plain.PlainLoginModule"
            if conf["sasl.mechanism"] == "PLAIN"
            else "org.apache.kafka.common.security.scram.ScramLoginModule"
        )
        user = _jaas_quote(conf.get("sasl.username", ""))
        password = _jaas_quote(conf.get("sasl.password", ""))
        props["sasl.jaas.config"] = f'{module} required username="{user}" password="{password}";'
    if "ssl.ca.location" in conf:
        # Java reads a PEM bundle as a trust store since Kafka 2.7 (KIP-651).
        props["ssl.truststore.type"] = "PEM"
        props["ssl.truststore.location"] = conf["ssl.ca.location"]
    return props


@contextlib.contextmanager
def client_properties_file(
    settings: Settings, overrides: Mapping[str, str] | None = None
) -> Iterator[Path]:
    props = {**java_client_properties(settings), **(overrides or {})}
    lines = [f"{k}={_properties_escape(v)}" for k, v in props.items()]
    with _private_file("client.properties", "\n".join(lines) + "\n") as path:
        yield path


@contextlib.contextmanager
def _argfile(*args: str) -> Iterator[Path]:
    # Every argument quoted; inside quotes an argfile takes backslash as an escape.
    quoted = ['"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' for a in args]
    with _private_file("java.args", " ".join(quoted) + "\n") as path:
        yield path


@contextlib.contextmanager
def _private_file(name: str, text: str) -> Iterator[Path]:
    """``text`` in a file readable by this user only, deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="riverbed-") as tmp:
        path = Path(tmp) / name
        # Created 0600 before anything secret is written to it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        yield path


def _jaas_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _properties_escape(value: str) -> str:
    # Backslash is the escape character of Java properties files (think paths).
    return value.replace("\\", "\\\\")


def java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise KafkaJarsError("java not found: install a Java 17+ runtime, or set JAVA_HOME")
    return found


def _run_maven(version: str, libs: Path, *, cwd: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaJarsError(
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
        output = "\n".join(last_lines(done.stdout + done.stderr, LOG_TAIL_LINES))
        raise KafkaJarsError(f"fetching Kafka {version} with Maven failed:\n{output}")


def last_lines(text: str, lines: int) -> list[str]:
    return list(deque((line for line in text.splitlines() if line.strip()), maxlen=lines))
