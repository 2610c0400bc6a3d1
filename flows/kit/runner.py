"""Running a flow: its processes, recovery store, and the options bytewax.run gave it.

    riverbed flow run <flow> [--processes N] [--no-recovery]   # run_flow(settings, flow)

runs, after ``python -m bytewax.recovery <store> 2`` the first time::

    python -m flows.run "flows.<flow>:get_flow()" \
        -r <flows_dir>/<flow>/recovery -s <flush interval, whole s> -b 0 [-i I -a ADDRS]

(``flows.run`` is ``bytewax.run`` with Ctrl-C and SIGTERM handled from its first
instant, see :mod:`flows.kit.shutdown`). A supervisor, not Bytewax's own
``-w``/``-i`` launcher, because a process stuck on a librdkafka bug exits with
:data:`~flows.kit.kafka_outputs.WEDGED_EXIT` and is restarted here, and a stop must
reach processes still starting.

That last part is why a stop reaches each process through a pipe of its own
(:data:`~flows.kit.shutdown.STOP_FD_ENV`) rather than as a signal: a process starts
with SIGINT and SIGTERM ignored (a Ctrl-C must not interrupt its imports), so a
signal sent before it installs its handlers would be lost, and the process would run
on until killed after :data:`_STOP_GRACE_S`. A byte in the pipe waits there until the
process reads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from flows.kit.fencing import FENCED_EXIT
from flows.kit.kafka_outputs import WEDGED_EXIT
from flows.kit.shutdown import STOP_FD_ENV
from riverbed.settings import Settings

log = logging.getLogger("riverbed.flow")

RECOVERY_PARTITIONS = 2  # fixed: the same store works for any number of processes
_STOP_GRACE_S = 30.0  # after a stop, how long processes get before SIGKILL
_WEDGED_RESTARTS = 5  # restarts of processes stuck on a librdkafka bug, then give up


def _bytewax_option(short: str, long: str, env: str) -> str | None:
    """An option bytewax.run was given (``-x V``, ``--long V``, ``--long=V``) or its env var."""
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg in (short, long) and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"{long}="):
            return arg.split("=", 1)[1]
    return os.environ.get(env) or None


def recovery_store() -> Path | None:
    """The recovery directory bytewax.run was given (-r), if any."""
    value = _bytewax_option("-r", "--recovery-directory", "BYTEWAX_RECOVERY_DIRECTORY")
    return Path(value) if value else None


def worker_count() -> int:
    """The flow's workers across its processes: bytewax.run's ``-a`` addresses (one per
    process) times its ``-w`` workers per process."""
    addresses = _bytewax_option("-a", "--addresses", "BYTEWAX_ADDRESSES")
    per_process = _bytewax_option("-w", "--workers-per-process", "BYTEWAX_WORKERS_PER_PROCESS")
    processes = len([a for a in addresses.split(";") if a]) if addresses else 1
    return max(processes, 1) * int(per_process or 1)


def process_id() -> int | None:
    """This process's index in a multi-process run (bytewax.run's -i), else None."""
    value = _bytewax_option("-i", "--process-id", "BYTEWAX_PROCESS_ID")
    return int(value) if value else None


def snapshot_interval_s(settings: Settings) -> int:
    """Bytewax epochs (and so recovery snapshots, and forced flushes) every this many s.

    Not the flush interval: a snapshot pickles the flow's whole state and the flow waits
    for it (~40 ms per 20,000 cards and partition), so snapshotting at every 5 s flush
    made every alert behind it late (p99 ~1 s at 5,000 events/s, bench/RESULTS.md)."""
    return max(1, round(settings.snapshot_interval_s))


def flow_dir(settings: Settings, flow: str) -> Path:
    """Where a flow keeps its recovery store, status files and lock."""
    return settings.flows_dir / flow


#: Written in the flow's directory when a process of it exited fenced (another copy of
#: the flow took its partitions over): Dagster's liveness sensor leaves such a flow down
#: rather than start it again, which would only fence the other copy in turn.
FENCED_MARK = "FENCED"


def fenced_mark(settings: Settings, flow: str) -> Path:
    return flow_dir(settings, flow) / FENCED_MARK


def recovery_dir(settings: Settings, flow: str) -> Path:
    return flow_dir(settings, flow) / "recovery"


def ensure_recovery_store(settings: Settings, flow: str) -> Path:
    """Create the recovery store on first use (``python -m bytewax.recovery <dir> <n>``)."""
    directory = recovery_dir(settings, flow)
    if not any(directory.glob("part-*.sqlite3")):
        directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "bytewax.recovery", str(directory), str(RECOVERY_PARTITIONS)],
            check=True,
        )
    return directory


def flow_commands(
    settings: Settings,
    flow: str,
    *,
    processes: int = 1,
    recovery: bool = True,
    ports: list[int] | None = None,
    topic_prefix: str = "",
) -> list[list[str]]:
    """The command line of each process of ``flows.<flow>:get_flow()`` (one per process)."""
    target = (
        f"flows.{flow}:get_flow(topic_prefix={topic_prefix!r})"
        if topic_prefix
        else f"flows.{flow}:get_flow()"
    )
    # flows.run is bytewax.run with the stop signals handled from its first instant.
    base = [sys.executable, "-m", "flows.run", target]
    if recovery:
        base += [
            "-r",
            str(recovery_dir(settings, flow)),
            "-s",
            str(snapshot_interval_s(settings)),
            "-b",
            "0",
        ]
    if processes <= 1:
        return [base]
    ports = ports or _free_ports(processes)
    addresses = ";".join(f"127.0.0.1:{p}" for p in ports)
    return [[*base, "-i", str(i), "-a", addresses] for i in range(processes)]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_flow(settings: Settings, flow: str, *, processes: int = 1, recovery: bool = True) -> int:
    """Run ``flows.<flow>`` in the foreground until it ends or is interrupted; the exit code.

    Settings reach the processes through the environment (``RIVERBED_*``), so the
    children see exactly what this process was given.
    """
    if recovery:
        ensure_recovery_store(settings, flow)
    flow_dir(settings, flow).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings_env(settings)}
    cwd = Path(__file__).resolve().parents[2]  # the repository: flows/ importable
    children: list[subprocess.Popen] = []
    stop_pipes: list[int] = []  # the write end of each child's stop pipe
    stopping_since: list[float] = []
    asked_to_stop: list[float] = []

    def forward(_signum: int, _frame: object) -> None:
        stopping_since.append(time.monotonic())
        for child, pipe in zip(children, stop_pipes, strict=True):
            if child.poll() is None:
                _tell_stop(pipe)

    def on_signal(signum: int, frame: object) -> None:
        # Forwarded even when the signal reached the whole group (Ctrl-C): a child
        # takes the same stop arriving twice as one, and one that was still starting
        # (signals ignored until flows.run installs its handlers) reads it then.
        asked_to_stop.append(time.monotonic())
        if not stopping_since:
            forward(signum, frame)

    def launch() -> None:
        close_pipes()
        children.clear()
        for cmd in flow_commands(settings, flow, processes=processes, recovery=recovery):
            read, write = os.pipe()
            try:
                child = subprocess.Popen(
                    cmd,
                    env={**env, STOP_FD_ENV: str(read)},
                    cwd=cwd,
                    preexec_fn=_ignore_stop_signals,
                    pass_fds=(read,),
                )
            finally:
                os.close(read)
            children.append(child)
            stop_pipes.append(write)
            if stopping_since:
                _tell_stop(write)

    def close_pipes() -> None:
        for pipe in stop_pipes:
            os.close(pipe)
        stop_pipes.clear()

    # Before the children start: a stop asked for from now on reaches them.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    restarts = 0
    try:
        launch()
        while True:
            codes = [c.poll() for c in children]
            if all(code is not None for code in codes):
                if asked_to_stop:
                    return 0  # stopped on request (Ctrl-C, SIGTERM): a clean end
                if WEDGED_EXIT in codes and restarts < _WEDGED_RESTARTS:
                    # A Kafka client stuck on a librdkafka bug (see flows.kit.kafka_outputs):
                    # start afresh from the last commit, as after any crash.
                    restarts += 1
                    log.warning(
                        "restarting the flow's processes after a stuck Kafka client",
                        extra={"restart": restarts, "of": _WEDGED_RESTARTS},
                    )
                    stopping_since.clear()
                    launch()
                    continue
                if FENCED_EXIT in codes:
                    fenced_mark(settings, flow).write_text(
                        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} a process "
                        "of this flow was fenced: another copy took its partitions over\n"
                    )
                    log.error(
                        "another copy of the flow took its partitions over (fenced); "
                        "stopping this one: stop the other copy before starting this one "
                        "again",
                        extra={"flow": flow, "exit": FENCED_EXIT},
                    )
                return max(abs(code) for code in codes if code is not None)
            now = time.monotonic()
            if any(code not in (None, 0) for code in codes) and not stopping_since:
                # One process failed: the cluster cannot go on without it.
                forward(signal.SIGINT, None)
            if stopping_since and now - stopping_since[0] > _STOP_GRACE_S:
                for child in children:
                    if child.poll() is None:
                        log.warning(
                            "a process did not stop in time; killing it (the next start "
                            "resumes from its last commit)",
                            extra={"flow": flow, "pid": child.pid, "grace_s": _STOP_GRACE_S},
                        )
                        child.kill()
            time.sleep(0.2)
    finally:
        close_pipes()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _tell_stop(pipe: int) -> None:
    """Ask the process at the other end of ``pipe`` to stop (see the module's docstring)."""
    with contextlib.suppress(OSError):  # it has exited, and closed its end
        os.write(pipe, b"\n")


def _ignore_stop_signals() -> None:
    # Until flows.run installs the flow's own handlers (its first statement), a Ctrl-C
    # to the process group must not interrupt the child's start; this process forwards
    # the stop to it once it runs (see run_flow).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as RIVERBED_* variables, for a child process."""
    return settings.to_env()
