"""Long-running background processes that outlive whoever started them.

A deployed flow runs as a process of its own, in a session of its own, so it
survives the Dagster run (and Dagster) that started it. What was started is
recorded in ``<dir>/deployment.json`` (pid, command, version, start time); a
restarted Dagster finds the process again from that record, and checks the pid
still belongs to the same command line before trusting it (pids are reused).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from riverbed.files import write_atomically

RECORD = "deployment.json"


@dataclass(frozen=True)
class Deployment:
    name: str
    pid: int
    argv: list[str]
    version: str
    started_at: float
    log_path: str
    create_time: float  # the process's own start time: guards against pid reuse


def _record_path(directory: Path) -> Path:
    return directory / RECORD


def read_deployment(directory: Path) -> Deployment | None:
    try:
        data = json.loads(_record_path(directory).read_text())
        return Deployment(**data)
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def _write_deployment(directory: Path, deployment: Deployment) -> None:
    write_atomically(_record_path(directory), json.dumps(asdict(deployment), indent=2))


def is_alive(deployment: Deployment | None) -> bool:
    """True when the recorded process still runs (and is the same process)."""
    if deployment is None:
        return False
    try:
        process = psutil.Process(deployment.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(process.create_time() - deployment.create_time) < 1.0
    except psutil.NoSuchProcess:
        return False


def start(
    name: str,
    argv: list[str],
    directory: Path,
    *,
    env: dict[str, str],
    version: str,
    cwd: Path | None = None,
) -> Deployment:
    """Start ``argv`` detached, logging to ``<directory>/<name>.log``, and record it."""
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"{name}.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return record(name, process, argv, directory, version=version, log_path=log_path)


def record(
    name: str,
    process: subprocess.Popen[bytes],
    argv: list[str],
    directory: Path,
    *,
    version: str,
    log_path: Path,
) -> Deployment:
    """Record a process started in a session of its own as ``<directory>/deployment.json``
    (what :func:`start` does for the processes it starts)."""
    directory.mkdir(parents=True, exist_ok=True)
    deployment = Deployment(
        name=name,
        pid=process.pid,
        argv=argv,
        version=version,
        started_at=time.time(),
        log_path=str(log_path),
        create_time=psutil.Process(process.pid).create_time(),
    )
    _write_deployment(directory, deployment)
    return deployment


def stop(deployment: Deployment, timeout: float | Callable[[], float] = 30.0) -> bool:
    """Stop a deployment's whole process group: SIGINT (a clean shutdown), then SIGKILL
    what is left after ``timeout`` seconds. A callable ``timeout`` is asked again while
    the stop waits, so it can shorten a wait under way (the platform's second Ctrl-C).

    The group, not only the recorded process: a flow's leader can die (kill -9, OOM)
    and leave its workers (``--processes N``) running, still in its group; they are
    stopped all the same. Returns True if any of it was running.
    """
    members = group_members(deployment)
    if not members:
        return False
    try:
        os.killpg(deployment.pid, signal.SIGINT)
    except ProcessLookupError:  # the group emptied meanwhile
        return True
    limit = timeout if callable(timeout) else lambda: timeout
    began = time.monotonic()
    left = members
    while left and time.monotonic() - began < limit():
        _gone, left = psutil.wait_procs(left, timeout=0.2)
    if left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(deployment.pid, signal.SIGKILL)
        psutil.wait_procs(left, timeout=10)
    return True


def group_members(deployment: Deployment) -> list[psutil.Process]:
    """The live processes of the deployment's group (its leader included, if alive).

    A process counts if its group is the deployment's (the recorded pid: the leader
    started a session of its own) and it started after the leader did, so a later
    process that reused the pid as a group id is not taken for one of them.
    """
    members = []
    for process in psutil.process_iter(["pid", "create_time", "status"]):
        try:
            if (
                os.getpgid(process.pid) == deployment.pid
                and process.info["create_time"] >= deployment.create_time - 1.0
                and process.info["status"] != psutil.STATUS_ZOMBIE
            ):
                members.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def reap_group(deployment: Deployment | None) -> int:
    """SIGKILL what is left of a dead deployment's process group; how many were left.

    A deployment is the leader of its own process group. If the leader was killed
    (kill -9, OOM), its children (e.g. Bytewax worker processes) may live on and
    would consume alongside a redeployed flow; this removes them first.
    """
    if deployment is None or is_alive(deployment):
        return 0
    leftovers = group_members(deployment)
    for process in leftovers:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(leftovers, timeout=10)
    return len(leftovers)


def stop_if_alive(
    deployment: Deployment | None, timeout: float | Callable[[], float] = 30.0
) -> bool:
    return deployment is not None and stop(deployment, timeout)


def tail(path: str | Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16_384))
            return b"\n".join(handle.read().splitlines()[-lines:]).decode(errors="replace")
    except FileNotFoundError:
        return ""
