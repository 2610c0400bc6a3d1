"""Stopping a deployment stops its whole process group, also when its leader is gone."""

import os
import signal
import sys
import time
from pathlib import Path

import psutil

from riverbed import processes

# A leader that starts a worker in its own process group (as `bytewax.run -p 2` does),
# writes the worker's pid, and waits. The worker records a SIGINT, then exits.
LEADER = """
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", {worker!r}])
open({pid_file!r}, "w").write(str(worker.pid))
time.sleep(600)
"""
WORKER = """
import signal, sys, time
def stop(*_):
    open({marker!r}, "w").write("stopped cleanly")
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
time.sleep(600)
"""


def start(tmp_path: Path) -> tuple[processes.Deployment, psutil.Process]:
    pid_file, marker = tmp_path / "worker.pid", tmp_path / "worker.stopped"
    worker = WORKER.format(marker=str(marker))
    leader = LEADER.format(worker=worker, pid_file=str(pid_file))
    deployment = processes.start(
        "flow", [sys.executable, "-c", leader], tmp_path, env=dict(os.environ), version="test"
    )
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.05)
    time.sleep(0.5)  # the worker's SIGINT handler is installed
    return deployment, psutil.Process(int(pid_file.read_text()))


def test_stop_stops_the_leader_and_its_workers(tmp_path: Path) -> None:
    deployment, worker = start(tmp_path)
    assert processes.stop(deployment, timeout=10)
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    assert (tmp_path / "worker.stopped").read_text() == "stopped cleanly"
    assert not processes.is_alive(deployment)


def test_stop_still_stops_the_workers_of_a_leader_that_died(tmp_path: Path) -> None:
    deployment, worker = start(tmp_path)
    os.kill(deployment.pid, signal.SIGKILL)
    psutil.Process(deployment.pid).wait(10)
    assert not processes.is_alive(deployment)
    assert worker.is_running()
    assert processes.stop(deployment, timeout=10)  # before the fix: False, worker left
    worker_gone = not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    assert worker_gone
    assert (tmp_path / "worker.stopped").read_text() == "stopped cleanly"
    assert not processes.stop(deployment, timeout=10)  # nothing left to stop


def test_a_timeout_that_shortens_while_the_stop_waits_cuts_the_wait(tmp_path: Path) -> None:
    # A process that ignores SIGINT: only SIGKILL stops it. The stop starts patient (60 s)
    # and is told to hurry half a second in (the platform's second Ctrl-C).
    ignoring = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"
    deployment = processes.start(
        "stubborn", [sys.executable, "-c", ignoring], tmp_path, env=dict(os.environ), version="t"
    )
    time.sleep(1.0)  # its handler is in place
    hurry_at = time.monotonic() + 0.5
    began = time.monotonic()
    assert processes.stop(deployment, timeout=lambda: 60.0 if time.monotonic() < hurry_at else 1.0)
    assert time.monotonic() - began < 10, "waited out the patient timeout"
    assert not processes.is_alive(deployment)
