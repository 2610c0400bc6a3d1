"""``make run``: bring the whole platform up on its embedded defaults, until Ctrl-C.

Steps, each idempotent so a second ``make run`` resumes where the first stopped:

0. hold ``RIVERBED_HOME`` (a second platform on it stops here) and stop what an earlier
   platform, killed before it could stop its children, left running;
1. the local broker (unless ``RIVERBED_KAFKA_BOOTSTRAP`` names a cluster);
2. Prometheus, ``riverbed metrics`` (the lake's, warehouse's and lag's state) and the
   live dashboard (``python -m dashboard``), then Dagster (web UI and daemon,
   ``dagster dev``) with its home under ``RIVERBED_HOME``;
3. through Dagster: the topic assets (reconciling the topics) and the flow assets
   (deploying the flows as processes of their own);
4. the payments producer at a modest rate, and the IoT sensors (the last day, then live).

Ctrl-C (or SIGTERM, or SIGHUP: its terminal closed) stops the producer, the flows
(they resume from their recovery store next time), Dagster, and the broker if a platform
started it (not if it was started by hand). A second signal while it stops (an impatient
user; ``timeout`` or a supervisor following up) does not cut the stop short, which would
leave the rest running: it makes the stop hurry, killing what has not stopped yet.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

from orchestration.lib import flows, webserver
from orchestration.lib.keys import flow_key, topic_key
from riverbed import locks, processes, prometheus
from riverbed.logs import configure_logging
from riverbed.settings import Settings, SettingsError, load_settings
from riverbed.topics import CATALOG

REPO = Path(__file__).resolve().parent.parent
DAGSTER_YAML = """\
# Written by riverbed.platform. One writer for the DuckDB warehouse at a time:
# every pool (duckdb_warehouse, flow_deploy) admits one step.
concurrency:
  pools:
    default_limit: 1
# The run queue is read every second, not every 5 s: a queued warehouse build waits
# for that read, and the wait is part of every event's way into the warehouse.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
    dequeue_use_threads: true
telemetry:
  enabled: false
# No "Join the Dagster community" modal over the UI on a new instance's first visit.
nux:
  enabled: false
"""
# Run config of the start-up materializations: every step in the run's own process.
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


# Readings/s while `make run` replays the sensors' last day (then 2.4/s, live).
IOT_CATCH_UP_RATE = 50


def say(message: str) -> None:
    print(f"[riverbed] {message}", file=sys.stderr, flush=True)


def child_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        **settings.to_env(),
        "DAGSTER_HOME": str(settings.dagster_home),
        # `dagster dev` (what the docs and this project use) warns that `dg dev` supersedes it.
        "PYTHONWARNINGS": "ignore:Function `dev_command` is superseded",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def start_broker(settings: Settings) -> bool:
    """Start the local broker if Riverbed manages one; True when the platform owns it (stops
    it at the end): this call started it, or an earlier platform did and was killed before
    it could stop it. A broker started by hand (`riverbed kafka start`) is left running."""
    if not settings.manages_local_broker:
        say(f"using the Kafka cluster at {settings.bootstrap_servers}")
        return False
    from riverbed.broker import LocalCluster

    broker = LocalCluster(settings)
    already = broker.status().running
    if not broker.jars.is_fetched():
        say(f"fetching Apache Kafka {settings.kafka_version} from Maven Central (first run only)")
    say(broker.start().message)
    owned = _broker_owned(settings)
    if already and not owned.exists():
        return False
    owned.parent.mkdir(parents=True, exist_ok=True)
    owned.touch()
    return True


def stop_broker(settings: Settings) -> None:
    from riverbed.broker import LocalCluster

    say(LocalCluster(settings).stop().message)
    _broker_owned(settings).unlink(missing_ok=True)


def _broker_owned(settings: Settings) -> Path:
    """There while a platform owns the running broker."""
    return children_dir(settings) / "broker.owned"


def spawn(name: str, argv: list[str], settings: Settings) -> Child:
    log_dir = settings.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            argv,
            env=child_env(settings),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
        )
    with contextlib.suppress(psutil.NoSuchProcess):  # it exited at once: nothing to stop later
        record_dir = children_dir(settings) / name
        processes.record(name, process, argv, record_dir, version="platform", log_path=log_path)
    say(f"started {name} (pid {process.pid}), log: {log_path}")
    return Child(name, process)


def children_dir(settings: Settings) -> Path:
    """Where each child's record is kept (``<name>/deployment.json``)."""
    return settings.home / "platform"


def hold_home(settings: Settings) -> IO[str]:
    """This run's claim on ``RIVERBED_HOME``, for as long as the returned file stays open:
    an flock, which the kernel releases however the platform ends. A second platform on
    the same home stops here, before it touches the first one's children."""
    try:
        return locks.hold(settings.home / "platform.lock")
    except locks.Held as held:
        raise RuntimeError(
            f"the platform is already running on {settings.home} ({held.holder}): stop it "
            "with Ctrl-C where it runs, or set RIVERBED_HOME to another folder"
        ) from None


def stop_leftovers(settings: Settings) -> None:
    """Stop the children an earlier platform on this home left running: it was killed
    (SIGKILL, out of memory) before it could stop them, and they would hold its ports.
    Called with the home held (:func:`hold_home`), so that earlier platform is gone."""
    records = (processes.read_deployment(d) for d in children_dir(settings).glob("*/"))
    found = sorted((r for r in records if r is not None), key=lambda r: -r.started_at)
    for deployment in found:
        if processes.stop_if_alive(deployment):
            say(f"stopped {deployment.name} (pid {deployment.pid}), left by an earlier run")


def write_dagster_home(settings: Settings) -> None:
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    (settings.dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)


@dataclass
class FirstBuild:
    """Says when the warehouse's first build has published it: on a new home that takes
    minutes after start (the flows' first lake commit, then a whole ``dbt build``: 285 s
    on a busy 2-core machine), and until then the warehouse file a newcomer was just
    shown is not there."""

    read_copy: Path
    since: float | None  # None: nothing to wait for (or said already)

    @classmethod
    def watch(cls, settings: Settings) -> FirstBuild:
        if settings.warehouse_read_path.exists():
            return cls(settings.warehouse_read_path, None)
        say(
            "the warehouse's first build starts after the flows' first lake commit "
            "(Dagster's lake_new_files sensor) and takes minutes (every model and data "
            "test once); its progress is on the Dagster UI's Runs page"
        )
        return cls(settings.warehouse_read_path, time.monotonic())

    def check(self) -> None:
        if self.since is not None and self.read_copy.exists():
            waited = time.monotonic() - self.since
            say(
                f"warehouse built ({waited:.0f} s after the flows were deployed); readers "
                f"open the copy each build publishes: {self.read_copy}"
            )
            self.since = None


def start_dagster(settings: Settings) -> Child:
    """``dagster dev`` (web UI, daemon, code server) on ``settings.dagster_port``, with its
    home under ``RIVERBED_HOME``; :func:`wait_for_dagster` waits until it answers."""
    write_dagster_home(settings)
    argv = [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(REPO / "workspace.yaml")]
    argv += ["-h", "127.0.0.1", "-p", str(settings.dagster_port)]
    return spawn("dagster", argv, settings)


def wait_for_dagster(settings: Settings, child: Child, timeout: float = 180.0) -> None:
    url = f"http://127.0.0.1:{settings.dagster_port}/server_info"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(
                f"dagster dev exited with status {child.process.returncode}; "
                f"see {settings.home / 'logs' / 'dagster.log'}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"the Dagster UI did not answer at {url} within {timeout:.0f} s")


def materialize(settings: Settings, selection: str) -> None:
    """Materialize assets through Dagster, recorded in its instance like any run.

    The steps run in this one process (``in_process`` executor): they only call Kafka or
    start the flow's detached process, and the default executor would start a Python
    process per step, each loading the code location again (seconds apiece).
    """
    argv = [
        str(Path(sys.executable).parent / "dagster"),
        "asset",
        "materialize",
        "-m",
        "orchestration.definitions",
        "--config-json",
        json.dumps(IN_PROCESS),
        "--select",
        selection,
    ]
    result = subprocess.run(
        argv, env=child_env(settings), cwd=REPO, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
        raise RuntimeError(f"materializing {selection} through Dagster failed:\n{tail}")


def start_monitoring(settings: Settings) -> list[Child]:
    """Prometheus (its configuration and rules in RIVERBED_HOME/prometheus), the exporter
    of the lake's, the warehouse's and the lag's state (`riverbed metrics`), and the
    live dashboard."""
    require_free_port(settings.prometheus_port, "Prometheus", "RIVERBED_PROMETHEUS_PORT")
    require_free_port(settings.dashboard_port, "the dashboard", "RIVERBED_DASHBOARD_PORT")
    prometheus.prepare(settings)
    children = [spawn("prometheus", prometheus.command(settings), settings)]
    children.append(spawn("metrics", [sys.executable, "-m", "riverbed.cli", "metrics"], settings))
    say(f"Prometheus: {prometheus.url(settings)} (alerts at {prometheus.url(settings)}/alerts)")
    children.append(spawn("dashboard", [sys.executable, "-m", "dashboard"], settings))
    say(f"dashboard: http://127.0.0.1:{settings.dashboard_port} (refreshes every 2 s)")
    return children


def require_free_port(port: int, what: str, setting: str) -> None:
    from riverbed.broker import port_holder, port_is_free

    if not port_is_free(port):
        raise RuntimeError(
            f"port {port} ({what}) is in use by {port_holder(port)}: stop it, or set {setting}"
        )


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# How long a child is waited for once the stop hurries (then SIGKILL).
HURRIED_STOP_S = 2.0


class Stopping:
    """While the platform stops: a Ctrl-C, SIGTERM or SIGHUP arriving then sets :attr:`hurry`
    instead of raising KeyboardInterrupt in the middle of the stop (seen: `make run` under
    `timeout`, whose SIGTERM came while the flows stopped, left a flow, Dagster and the
    dashboard running, and a traceback)."""

    def __init__(self) -> None:
        self.hurry = False

    def __enter__(self) -> Stopping:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if not self.hurry:
            say(f"{signal.Signals(signum).name} again: killing what has not stopped yet")
        self.hurry = True

    def timeout(self, patient_s: float) -> float:
        """How long to wait for a process to stop cleanly before killing it."""
        return min(patient_s, HURRIED_STOP_S) if self.hurry else patient_s


def stop_children(children: list[Child], stopping: Stopping, timeout: float = 30.0) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            os.killpg(child.process.pid, signal.SIGINT)
        if _stopped_within(child.process, timeout, stopping):
            say(f"stopped {child.name}")
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
            say(f"killed {child.name}")


def _stopped_within(process: subprocess.Popen[bytes], timeout: float, stopping: Stopping) -> bool:
    """Whether ``process`` exits within ``timeout`` s (or, once the stop hurries, within
    :data:`HURRIED_STOP_S` of when it was asked to)."""
    began = time.monotonic()
    while process.poll() is None:
        if time.monotonic() - began > stopping.timeout(timeout):
            return False
        time.sleep(0.1)
    return True


def cancel_dagster_runs(settings: Settings, stopping: Stopping) -> None:
    """Cancel Dagster's runs that have not ended (a warehouse build, as a rule) while
    Dagster still answers. Stopped with Dagster instead, a run is interrupted under way
    and Dagster records it as failed ("interrupted unexpectedly. No user initiated
    termination request was found"); canceled, it shows as CANCELED, and the next
    start builds the warehouse again. A run a sensor launches meanwhile is canceled too."""
    asked: dict[str, str] = {}
    began = time.monotonic()
    try:
        while running := webserver.runs_in_flight(settings):
            for run_id, (job, status) in running.items():
                if run_id not in asked and status != "CANCELING":
                    webserver.cancel_run(settings, run_id, status)
                    asked[run_id] = job
            if time.monotonic() - began > stopping.timeout(30.0):
                say(f"Dagster runs still ending after {time.monotonic() - began:.0f} s; "
                    "stopping Dagster anyway")  # fmt: skip
                return
            time.sleep(0.5)
    except (OSError, webserver.GraphQLError) as exc:
        say(f"could not cancel Dagster's runs in flight ({exc}); Dagster may record "
            "them as failed")  # fmt: skip
        return
    if asked:
        jobs = ", ".join(sorted(set(asked.values())))
        say(f"canceled {len(asked)} Dagster run(s) in flight ({jobs}); Dagster shows them "
            "as CANCELED")  # fmt: skip


def stop_flows(settings: Settings, stopping: Stopping) -> None:
    for domain in flows.FLOWS:
        if flows.stop(settings, domain, timeout=lambda: stopping.timeout(30.0)):
            say(f"stopped the {domain} flow (it resumes from its recovery store next time)")


def run(settings: Settings, *, with_producer: bool = True) -> int:
    settings.home.mkdir(parents=True, exist_ok=True)
    home = hold_home(settings)  # noqa: F841 - held until the process ends
    stop_leftovers(settings)
    owns_broker = start_broker(settings)
    children: list[Child] = []
    try:
        children += start_monitoring(settings)
        dagster = start_dagster(settings)
        children.append(dagster)
        wait_for_dagster(settings, dagster)
        say(f"Dagster UI: http://127.0.0.1:{settings.dagster_port} (sensors and schedules on)")
        # One run: the flows' assets depend on their topics' (so the topics come first, and
        # a flow is not deployed if its topics failed), and each run of the CLI loads the
        # code location again (~9 s of CPU).
        keys = [topic_key(spec.name) for spec in CATALOG] + [flow_key(d) for d in flows.FLOWS]
        materialize(settings, ",".join(key.to_user_string() for key in keys))
        say(
            "topics reconciled and flows deployed through Dagster (assets kafka/*, flows/*); "
            f"flow logs and status under {settings.flows_dir}"
        )
        if with_producer:
            produce = [sys.executable, "-m", "riverbed.cli", "produce", "payments"]
            children.append(spawn("producer", produce, settings))
            say(f"producing to {settings.bootstrap_servers} at {settings.producer_rate:g} events/s")
            # The building's sensors: the last day replayed at IOT_CATCH_UP_RATE, then live.
            sensors = [sys.executable, "-m", "riverbed.cli", "produce", "iot"]
            sensors += ["--rate", str(IOT_CATCH_UP_RATE)]
            children.append(spawn("sensors", sensors, settings))
            say("sensor readings: the last day of 8 rooms replayed, then live")
        say(f"lake: {settings.lake_dir}; warehouse: {settings.warehouse_path}")
        first_build = FirstBuild.watch(settings)
        say("press Ctrl-C to stop everything")
        while all(c.process.poll() is None for c in children):
            first_build.check()
            time.sleep(1)
        for child in children:
            if child.process.poll() is not None:
                say(f"{child.name} exited with status {child.process.returncode}; stopping")
        return 1
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        with Stopping() as stopping:
            producer = [c for c in children if c.name == "producer"]
            stop_children(producer, stopping)
            if any(c.name == "dagster" and c.process.poll() is None for c in children):
                cancel_dagster_runs(settings, stopping)
            stop_flows(settings, stopping)
            stop_children([c for c in children if c.name != "producer"], stopping)
            if owns_broker:
                stop_broker(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the whole Riverbed platform.")
    parser.add_argument(
        "--no-producer", action="store_true", help="start everything but the producer"
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.log_level)

    # SIGTERM (a supervisor, a test) stops the platform as Ctrl-C does.
    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    # A closed terminal: the children run in sessions of their own and would not hear it.
    signal.signal(signal.SIGHUP, _terminate)
    # A shell that starts us in the background ignores SIGINT, and the children would
    # inherit that; catching it here makes Ctrl-C work and resets it for them.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run(settings, with_producer=not args.no_producer)
    except RuntimeError as exc:
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
