"""bench.producer_bench's CPU placement: who it finds as the broker, and that every
affinity it changes is put back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from bench.producer_bench import broker_kept_off, on_cpu, producer_cores

TWO_CPUS = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="pinning needs two CPUs this process may use"
)
# A stand-in broker: a process that listens on a port and has a few threads.
LISTENER = """
import socket, sys, threading, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
for _ in range(3):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print(s.getsockname()[1], flush=True)
time.sleep(60)
"""


def settings_for(port: int) -> SimpleNamespace:
    return SimpleNamespace(bootstrap_servers=f"127.0.0.1:{port},broker.example:{port}")


@TWO_CPUS
def test_the_listener_on_a_bootstrap_port_is_the_broker_and_gets_the_other_cpus() -> None:
    broker = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(broker.stdout.readline())  # type: ignore[union-attr]
        cores = producer_cores(settings_for(port))  # type: ignore[arg-type]
        cpus = sorted(os.sched_getaffinity(0))
        assert cores is not None
        assert cores.broker_pids == (broker.pid,)
        assert cores.producer == cpus[-1]
        assert cores.broker == frozenset(cpus[:-1])
        threads = [int(t) for t in os.listdir(f"/proc/{broker.pid}/task")]
        before = {t: os.sched_getaffinity(t) for t in threads}
        with broker_kept_off(cores):
            assert all(os.sched_getaffinity(t) == cores.broker for t in threads)
        assert {t: os.sched_getaffinity(t) for t in threads} == before
    finally:
        broker.kill()
        broker.wait()


def test_no_local_listener_means_no_pinning(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert producer_cores(settings_for(port)) is None  # type: ignore[arg-type]
    assert "not pinning" in capsys.readouterr().out


@TWO_CPUS
def test_the_producer_and_what_it_starts_run_on_its_cpu_until_it_is_done() -> None:
    before = os.sched_getaffinity(0)
    cores = SimpleNamespace(producer=max(before))
    with on_cpu(cores):  # type: ignore[arg-type]
        assert os.sched_getaffinity(0) == {cores.producer}
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert child.stdout.strip() == f"[{cores.producer}]"
    assert os.sched_getaffinity(0) == before
