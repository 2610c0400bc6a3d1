"""A flow's stop signals, counted by when they arrive, not by when Python handles them.

Each test runs a small process that installs the flow's handlers (flows.kit.shutdown)
and then blocks its main thread in one librdkafka call (``init_transactions`` against a
port nobody listens on), as a flow's does while a new cluster's transaction
coordinator loads: Python cannot run a signal handler until that call returns.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from flows.kit.shutdown import STOP_FD_ENV
from tests.support.flow_harness import REPO

SCRIPT = """
import sys, time
from confluent_kafka import KafkaException, Producer
from flows.kit import shutdown

shutdown.install()
print("ready", flush=True)
producer = Producer({"bootstrap.servers": "127.0.0.1:9", "transactional.id": "t",
                     "log_level": 0})
while not shutdown.requested():  # Python code: the first signal is handled at once
    pass
print("blocking", flush=True)
try:
    producer.init_transactions(float(sys.argv[1]))
except KafkaException:
    pass
print("unblocked", flush=True)
for _ in range(20):  # Python code again: a pending KeyboardInterrupt surfaces here
    time.sleep(0.05)
print("requested" if shutdown.requested() else "not requested", flush=True)
"""


def _start(block_s: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(block_s)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_stop_and_its_copy_handled_seconds_apart_are_one_stop() -> None:
    proc = _start(block_s=5.0)
    proc.send_signal(signal.SIGINT)  # Ctrl-C to the process group...
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "blocking"
    time.sleep(0.3)  # the main thread is in the Kafka call by now
    proc.send_signal(signal.SIGINT)  # ...and riverbed flow run's forwarded copy
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.split() == ["unblocked", "requested"]
    assert "KeyboardInterrupt" not in err
    assert err.count("stopping: ending the input") == 1, err


def test_a_second_stop_seconds_after_the_first_interrupts() -> None:
    proc = _start(block_s=6.0)
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "blocking"
    time.sleep(4.0)  # past REPEAT_AFTER_S: an impatient second Ctrl-C
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err
    assert "requested" not in out  # interrupted before it got there


def test_a_stop_asked_through_the_pipe_before_the_handlers_is_not_lost() -> None:
    # As riverbed flow run starts a process: stop signals ignored until flows.run
    # installs its handlers, and the stop asked for meanwhile waiting in the pipe.
    read, write = os.pipe()
    os.write(write, b"\n")
    script = (
        "import time\n"
        "from flows.kit import shutdown\n"
        "shutdown.install()\n"
        "shutdown.follow_parent()\n"
        "deadline = time.monotonic() + 10\n"
        "while not shutdown.requested() and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "print('requested' if shutdown.requested() else 'not requested', flush=True)\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO,
            env={**os.environ, STOP_FD_ENV: str(read)},
            pass_fds=(read,),
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        os.close(read)
        os.close(write)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["requested"]
    assert "stopping: ending the input" in proc.stderr, proc.stderr
