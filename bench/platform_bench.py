"""Benchmark the whole platform: event -> warehouse latency under ``make run``.

    python -m bench.platform_bench [--rate 200] [--seconds 180] [--wait 180]

The issue's goal: "Under make run at 200 events/s: event -> warehouse p99 < 60 s,
with no run waiting."

How it measures:

1. A broker: ``RIVERBED_KAFKA_BOOTSTRAP`` if set (its payments topic must be empty,
   or pass ``--recreate-topics``), else Riverbed's own local broker
   (``riverbed.broker.LocalCluster``) on ``RIVERBED_KAFKA_PORT``, with its data in
   the fresh home below (the jars from ``RIVERBED_KAFKA_DIST`` or an already fetched
   dist in the repository, when there is one).
2. The platform as ``make run`` starts it, headless: ``python -m orchestration.platform
   --no-producer`` in a session of its own, on a fresh temporary ``RIVERBED_HOME`` and
   a free Dagster port, every other setting from the environment (the embedded
   defaults). The benchmark waits for "press Ctrl-C" in its log.
3. Payments from the project's generator (``PaymentsGenerator`` with the settings'
   ``GeneratorConfig``, event times on the wall clock) at a steady ``--rate`` for
   ``--seconds``. For each valid transaction the baseline is the wall time its first
   copy was acknowledged by the broker (the delivery callback).
4. Meanwhile one thread opens the read-only copy each build publishes
   (``$RIVERBED_HOME/warehouse-read.duckdb``) about every second and records when
   each transaction id first shows in ``main.fct_transactions``; another asks
   Dagster's GraphQL API every ~2 s for the runs of ``build_warehouse`` and records
   the most runs queued at once, the most queued while another build was in flight
   (a run waiting), and the most in flight (queued, starting or started) at once.
5. After producing, it waits until every valid id is visible (or ``--wait`` s pass),
   stops the platform (SIGTERM to its process group; SIGKILL after 90 s) and the
   broker if it started it.

Latency = visible in the read copy - acknowledged, per valid transaction id;
p50/p90/p99/max over the ids that arrived (ids that never arrived are reported,
and count as missed). From the runs' own timestamps it also reports each build's
duration and whether any run was created while another build ran (a wait the 2 s
sampling could miss). Appends a section to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import confluent_kafka
import dagster
import duckdb
import yaml
from confluent_kafka import KafkaError, Message, Producer

from orchestration.defs.lake.sensors import lake_new_files
from orchestration.lib.webserver import GraphQLError, graphql
from orchestration.platform import DAGSTER_YAML
from producers.kafka_loop import PRODUCER_DEFAULTS, produce_when_room
from producers.payments import GeneratorConfig, PaymentsGenerator
from riverbed.kafka_admin import high_watermarks, recreate_topics
from riverbed.logs import configure_logging
from riverbed.settings import Settings, SettingsError, load_settings
from riverbed.topics import PAYMENTS_TRANSACTIONS

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
REPO = Path(__file__).resolve().parent.parent
JOB = "build_warehouse"
MART = "main.fct_transactions"
UP_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 90.0
WAREHOUSE_POLL_S = 1.0
DAGSTER_POLL_S = 2.0
GOAL_P99_S = 60.0
SENSOR_S = lake_new_files.minimum_interval_seconds
DEQUEUE_S = yaml.safe_load(DAGSTER_YAML)["run_coordinator"]["config"]["dequeue_interval_seconds"]

log = logging.getLogger("riverbed.bench.platform")


class BenchError(RuntimeError):
    """The benchmark could not run; the message says why and where to look."""


# -- small helpers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return f"({path} does not exist)"


# -- the broker ------------------------------------------------------------------------------


def shared_dist(settings: Settings) -> Path | None:
    """An already fetched Kafka dist to reuse, so a fresh home does not fetch again."""
    if settings.kafka_dist:
        return settings.kafka_dist
    version = settings.kafka_version
    for candidate in (
        REPO / ".riverbed" / "kafka" / "dist" / version,
        REPO / ".riverbed-test" / "broker" / "kafka" / "dist" / version,
    ):
        if (candidate / "libs" / f"kafka_2.13-{version}.jar").is_file():
            return candidate
    return None


def start_local_broker(settings: Settings) -> object:
    from riverbed.broker import LocalCluster

    broker = LocalCluster(settings)
    if broker.status().running:
        raise BenchError(f"a broker already runs with its data in {settings.kafka_dir}")
    log.info(
        "starting the local broker",
        extra={"bootstrap": settings.bootstrap_servers, "dist": str(settings.kafka_dist)},
    )
    status = broker.start()
    log.info("broker up", extra={"pids": status.pids, "bootstrap": status.bootstrap})
    return broker


# -- the platform ----------------------------------------------------------------------------


class Platform:
    """``python -m orchestration.platform --no-producer`` in a session of its own."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERBED_")}
        env.update(self.settings.to_env())
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "orchestration.platform", "--no-producer"],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log.info(
            "started the platform",
            extra={"pid": self.process.pid, "log": str(self.log_path)},
        )

    def wait_until_up(self, timeout: float = UP_TIMEOUT_S) -> float:
        assert self.process is not None
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.process.poll() is not None:
                raise BenchError(
                    f"the platform exited ({self.process.returncode}) while starting; "
                    f"last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            if "press Ctrl-C" in tail(self.log_path, 100_000):
                return time.monotonic() - began
            time.sleep(1)
        raise BenchError(
            f"the platform did not come up within {timeout:.0f} s; "
            f"last lines of {self.log_path}:\n{tail(self.log_path)}"
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> float:
        """SIGTERM to the process group (the platform stops its children in order)."""
        if self.process is None:
            return 0.0
        began = time.monotonic()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning(
                    "the platform did not stop within the timeout; killing its group",
                    extra={"timeout_s": STOP_TIMEOUT_S},
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return time.monotonic() - began


RUNS_QUERY = (
    '{ runsOrError(filter: {pipelineName: "' + JOB + '"}) {'
    " __typename"
    " ... on Runs { results { runId status creationTime startTime endTime } }"
    " ... on PythonError { message } } }"
)


def warehouse_runs(settings: Settings) -> list[dict]:
    result = graphql(settings, RUNS_QUERY)["runsOrError"]
    if result["__typename"] != "Runs":
        raise BenchError(f"runsOrError answered {result}")
    return result["results"]


# -- watchers --------------------------------------------------------------------------------


@dataclass
class RunStats:
    polls: int = 0
    errors: int = 0
    max_queued: int = 0
    max_waiting: int = 0  # queued while another build was starting or running
    max_in_flight: int = 0  # queued + starting + started
    runs: dict[str, dict] = field(default_factory=dict)


def watch_runs(settings: Settings, stop: threading.Event, stats: RunStats) -> None:
    while not stop.is_set():
        try:
            runs = warehouse_runs(settings)
        except (OSError, BenchError, ValueError) as exc:
            stats.errors += 1
            if stats.errors in (1, 10, 100):
                log.warning("Dagster poll failed", extra={"error": str(exc)[:300]})
        else:
            stats.polls += 1
            queued = sum(r["status"] == "QUEUED" for r in runs)
            active = sum(r["status"] in ("NOT_STARTED", "STARTING", "STARTED") for r in runs)
            stats.max_queued = max(stats.max_queued, queued)
            stats.max_in_flight = max(stats.max_in_flight, queued + active)
            if active:
                stats.max_waiting = max(stats.max_waiting, queued)
            for r in runs:
                stats.runs[r["runId"]] = r
        stop.wait(DAGSTER_POLL_S)


@dataclass
class Visibility:
    seen: dict[str, float] = field(default_factory=dict)
    polls: int = 0
    errors: int = 0
    last_error: str = ""
    first_copy_at: float | None = None


def watch_warehouse(path: Path, stop: threading.Event, vis: Visibility) -> None:
    """When each transaction id first shows in the read copy's mart."""
    while not stop.is_set():
        try:
            with duckdb.connect(str(path), read_only=True) as con:
                ids = con.execute(f"select transaction_id from {MART}").fetchall()
        except duckdb.Error as exc:  # not published yet, or being replaced
            vis.errors += 1
            vis.last_error = str(exc).splitlines()[0][:200]
        else:
            now = time.time()
            vis.polls += 1
            if vis.first_copy_at is None:
                vis.first_copy_at = now
            for (txn,) in ids:
                if txn not in vis.seen:
                    vis.seen[txn] = now
        stop.wait(WAREHOUSE_POLL_S)


# -- producing -------------------------------------------------------------------------------


@dataclass
class Produced:
    sent: int = 0
    invalid: int = 0
    resent: int = 0
    failed: int = 0
    acked: dict[str, float] = field(default_factory=dict)  # valid id -> first ack
    seconds: float = 0.0


def produce(settings: Settings, rate: float, seconds: float) -> Produced:
    """Generated payments at a steady rate, event times on the wall clock."""
    out = Produced()
    generator = PaymentsGenerator(
        GeneratorConfig.from_settings(settings),
        seed=int(time.time()),
        start=time.time(),
        rate=rate,
        wall_clock=time.time,
    )
    producer = Producer({**settings.kafka_client_config(), **PRODUCER_DEFAULTS})

    def delivered(err: KafkaError | None, msg: Message, txn: str | None) -> None:
        if err is not None:
            out.failed += 1
            if out.failed == 1:
                log.warning("a delivery failed", extra={"error": str(err)})
        elif txn is not None and txn not in out.acked:
            out.acked[txn] = time.time()

    events = iter(generator)
    began = time.monotonic()
    last_report = began
    while (elapsed := time.monotonic() - began) < seconds:
        due = int(elapsed * rate)
        while out.sent < due:
            event = next(events)
            txn = event.transaction_id if event.valid else None
            out.invalid += not event.valid
            out.resent += event.resent

            def report(err: KafkaError | None, msg: Message, txn: str | None = txn) -> None:
                delivered(err, msg, txn)

            produce_when_room(
                producer, PAYMENTS_TRANSACTIONS, event.value, event.key, on_delivery=report
            )
            out.sent += 1
        producer.poll(0)
        if time.monotonic() - last_report >= 30:
            last_report = time.monotonic()
            log.info("producing", extra={"sent": out.sent, "acked": len(out.acked)})
        time.sleep(0.01)
    left = producer.flush(60)
    out.seconds = time.monotonic() - began
    if left:
        raise BenchError(f"{left} messages still undelivered 60 s after producing ended")
    return out


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    rate: float
    seconds: float
    produced: Produced
    latencies: list[float]
    missing: int
    runs: RunStats
    up_s: float
    waited_s: float
    stop_s: float = 0.0
    log_problems: list[str] = field(default_factory=list)
    home: Path | None = None

    @property
    def p99(self) -> float:
        # An id that never arrived counts as later than any that did.
        values = self.latencies + [float("inf")] * self.missing
        return percentile(values, 0.99)


def run_timestamps(stats: RunStats) -> dict[str, object]:
    """From the runs' own timestamps: durations, queue delays, runs created mid-build."""
    runs = sorted(stats.runs.values(), key=lambda r: r["creationTime"] or 0)
    durations = [r["endTime"] - r["startTime"] for r in runs if r["startTime"] and r["endTime"]]
    delays = [r["startTime"] - r["creationTime"] for r in runs if r["startTime"]]
    created_mid_build = 0
    for r in runs:
        for other in runs:
            if other is r or not other["startTime"]:
                continue
            end = other["endTime"] or float("inf")
            if other["startTime"] <= r["creationTime"] < end:
                created_mid_build += 1
                break
    statuses: dict[str, int] = {}
    for r in runs:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {
        "count": len(runs),
        "statuses": statuses,
        "duration_p50": percentile(durations, 0.5),
        "duration_max": max(durations, default=float("nan")),
        "delay_max": max(delays, default=float("nan")),
        "created_mid_build": created_mid_build,
    }


LOG_PROBLEM = re.compile(r"Traceback|\bERROR\b(?!=0)|level=error|RUN_FAILURE|Exception\b")


def log_problems(home: Path, platform_log: Path) -> list[str]:
    """Lines that look like errors in the platform's and its children's logs."""
    found: list[str] = []
    paths = [platform_log, *sorted((home / "logs").glob("*.log"))]
    paths += sorted((home / "flows").rglob("*.log")) if (home / "flows").exists() else []
    for path in paths:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                if LOG_PROBLEM.search(line):
                    found.append(f"{path.name}: {line.strip()[:240]}")
    return found


def bench(base: Settings, rate: float, seconds: float, wait: float, recreate: bool,
          work: Path) -> Outcome:  # fmt: skip
    home = work / "riverbed"
    home.mkdir(parents=True)
    settings = load_settings(
        **{
            **base.model_dump(exclude_none=True),
            "home": home,
            "dagster_port": free_port(),
            "kafka_dist": shared_dist(base),
        }
    )
    broker = None
    if settings.manages_local_broker:
        broker = start_local_broker(settings)
    else:
        marks = high_watermarks(settings, PAYMENTS_TRANSACTIONS)  # {} for no topic
        held = sum(high - low for low, high in marks.values())
        if held:
            if not recreate:
                raise BenchError(
                    f"{PAYMENTS_TRANSACTIONS} on {settings.bootstrap_servers} already holds "
                    f"{held:,} messages: the flow would read them first. Pass "
                    "--recreate-topics to delete and re-declare Riverbed's topics there, "
                    "or unset RIVERBED_KAFKA_BOOTSTRAP to use a fresh local broker."
                )
            log.info(
                "recreating Riverbed's topics", extra={"bootstrap": settings.bootstrap_servers}
            )
            recreate_topics(settings, groups=[settings.consumer_group])
    # The platform uses the broker as a cluster it did not start: it never stops it.
    platform_settings = load_settings(
        **{**settings.model_dump(exclude_none=True), "kafka_bootstrap": settings.bootstrap_servers}
    )
    platform_log = work / "platform.log"
    plat = Platform(platform_settings, platform_log)
    stop = threading.Event()
    stats = RunStats()
    vis = Visibility()
    threads = [
        threading.Thread(target=watch_runs, args=(settings, stop, stats), daemon=True),
        threading.Thread(
            target=watch_warehouse, args=(settings.warehouse_read_path, stop, vis), daemon=True
        ),
    ]
    try:
        plat.start()
        up_s = plat.wait_until_up()
        log.info(
            "platform up",
            extra={"seconds": round(up_s, 1), "dagster": f"127.0.0.1:{settings.dagster_port}"},
        )
        warehouse_runs(settings)  # the query works on this Dagster, or fail now
        for t in threads:
            t.start()
        log.info("producing", extra={"rate": rate, "seconds": seconds})
        produced = produce(settings, rate, seconds)
        log.info(
            "produced",
            extra={
                "sent": produced.sent,
                "valid_ids": len(produced.acked),
                "failed": produced.failed,
                "seconds": round(produced.seconds, 1),
            },
        )
        began = time.monotonic()
        last_report = began
        while time.monotonic() - began < wait:
            missing = len(produced.acked.keys() - vis.seen.keys())
            if missing == 0:
                break
            if not plat.alive():
                log.warning("the platform exited while waiting", extra={"log": str(platform_log)})
                break
            if time.monotonic() - last_report >= 30:
                last_report = time.monotonic()
                log.info("waiting for the warehouse", extra={"missing": missing})
            time.sleep(1)
        waited_s = time.monotonic() - began
        with contextlib.suppress(OSError, BenchError, ValueError):
            for r in warehouse_runs(settings):
                stats.runs[r["runId"]] = r
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        stop_s = plat.stop()
        log.info("platform stopped", extra={"seconds": round(stop_s, 1)})
        if broker is not None:
            log.info("broker", extra={"status": broker.stop().message})  # type: ignore[attr-defined]
    latencies = [vis.seen[txn] - acked for txn, acked in produced.acked.items() if txn in vis.seen]
    return Outcome(
        rate=rate,
        seconds=seconds,
        produced=produced,
        latencies=latencies,
        missing=len(produced.acked) - len(latencies),
        runs=stats,
        up_s=up_s,
        waited_s=waited_s,
        stop_s=stop_s,
        log_problems=log_problems(home, platform_log),
        home=home,
    )


# -- results ---------------------------------------------------------------------------------


def machine() -> str:
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    return (
        f"{os.cpu_count()} CPUs{mem}, {platform.system()} {platform.machine()}, Python "
        f"{platform.python_version()}, dagster {dagster.__version__}, duckdb "
        f"{duckdb.__version__}, confluent-kafka {confluent_kafka.version()}; broker, "
        "platform and producer on one host"
    )


def fmt_s(value: float) -> str:
    return "n/a" if value != value else f"{value:,.1f}"  # NaN


def report(out: Outcome, settings: Settings, command: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lat = out.latencies
    t = run_timestamps(out.runs)
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(t["statuses"].items())) or "none"  # type: ignore[union-attr]
    p99 = out.p99
    p99_text = "n/a (ids missing)" if p99 == float("inf") else f"{p99:,.1f} s"
    met_p99 = "met" if p99 < GOAL_P99_S else "NOT met"
    met_wait = "met" if out.runs.max_waiting == 0 and t["created_mid_build"] == 0 else "NOT met"
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"""
## Platform: event -> warehouse latency under `make run` ({when})

- machine: {machine()}; load average at the end {load} (the machine is shared)
- the platform as `make run` starts it (`python -m orchestration.platform --no-producer`),
  on a fresh `RIVERBED_HOME`, embedded defaults (flow flush every
  {settings.flush_interval_s:g}s, `lake_new_files` sensor every {SENSOR_S} s, a run queue read every
  {DEQUEUE_S} s, one warehouse
  build at a time); up in {out.up_s:.0f} s
- producer: the payments generator at a steady {out.rate:g} events/s for {out.seconds:g} s
  (event time = wall clock, {settings.producer_cards:,} cards); {out.produced.sent:,} events,
  {out.produced.invalid:,} invalid, {out.produced.resent:,} resends, {out.produced.failed} failed
- latency: per valid transaction id, broker ack (delivery callback) -> first seen in
  `{MART}` of the read copy `warehouse-read.duckdb` (polled every
  {WAREHOUSE_POLL_S:g} s); runs of `{JOB}` sampled through Dagster's GraphQL every
  {DAGSTER_POLL_S:g} s ({out.runs.polls} samples)

| metric | value |
|---|---:|
| events produced | {out.produced.sent:,} |
| valid transaction ids | {len(out.produced.acked):,} |
| reached the warehouse | {len(lat):,} |
| latency p50 s | {fmt_s(percentile(lat, 0.5))} |
| latency p90 s | {fmt_s(percentile(lat, 0.9))} |
| latency p99 s | {fmt_s(percentile(lat, 0.99))} |
| latency max s | {fmt_s(max(lat, default=float("nan")))} |
| `{JOB}` runs | {t["count"]} ({statuses}) |
| build duration p50 / max s | {fmt_s(t["duration_p50"])} / {fmt_s(t["duration_max"])} |
| max queued at once | {out.runs.max_queued} |
| max queued behind a running build (waiting) | {out.runs.max_waiting} |
| max in flight at once (queued + starting + started) | {out.runs.max_in_flight} |
| runs created while another build ran (from run timestamps) | {t["created_mid_build"]} |

Goals: event -> warehouse p99 < {GOAL_P99_S:g} s (**{p99_text}**, {met_p99}; ids that
never arrived count as late); no run waiting, i.e. max queued behind another build = 0
(**{out.runs.max_waiting}**, {met_wait}; max queued at once, counting a run's own moment in
the run queue with no other build in flight: {out.runs.max_queued}).

Reproduce: `{command}`
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.platform_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rate", type=float, default=200.0, help="events/s (200)")
    parser.add_argument("--seconds", type=float, default=180.0, help="producing time (180)")
    parser.add_argument(
        "--wait", type=float, default=180.0, help="max s to wait for the warehouse after (180)"
    )
    parser.add_argument(
        "--recreate-topics",
        action="store_true",
        help="with RIVERBED_KAFKA_BOOTSTRAP: delete and re-declare Riverbed's topics first",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    parser.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be > 0")
    configure_logging("INFO")
    try:
        base = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="riverbed-platform-bench-"))
    keep = args.keep
    try:
        outcome = bench(base, args.rate, args.seconds, args.wait, args.recreate_topics, work)
    except (BenchError, GraphQLError) as exc:
        log.error("benchmark failed", extra={"error": str(exc), "work": str(work)})
        return 1
    except KeyboardInterrupt:
        log.warning("interrupted", extra={"work": str(work)})
        return 130
    finally:
        if keep:
            log.info("kept the temporary home", extra={"work": str(work)})
    command = "python -m bench.platform_bench " + " ".join(
        f"--{k} {v:g}" for k, v in (("rate", args.rate), ("seconds", args.seconds))
    )
    if not base.manages_local_broker:
        command = f"RIVERBED_KAFKA_BOOTSTRAP=... {command}"
    else:
        command = f"RIVERBED_KAFKA_PORT={base.kafka_port} {command}"
    text = report(outcome, base, command)
    print(text)
    if outcome.log_problems:
        log.warning(
            "error-like lines in the platform's logs",
            extra={"count": len(outcome.log_problems), "work": str(work)},
        )
        for line in outcome.log_problems[:20]:
            print(f"  {line}", file=sys.stderr)
        keep = True
    if outcome.missing or outcome.p99 >= GOAL_P99_S:
        keep = True
    if not args.no_results:
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write("\n" + text.strip() + "\n")
    if keep:
        log.info("kept the temporary home for inspection", extra={"work": str(work)})
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
