"""``make run``: bring the whole platform up on its embedded defaults, until Ctrl-C.

Steps, each idempotent so a second ``make run`` resumes where the first stopped:
the local broker (unless ``RIVERBED_KAFKA_BOOTSTRAP`` names a cluster), the
topics, then the long-running parts as child processes: the payments producer
at a modest rate and the payments flow. Ctrl-C stops the children, then the
broker this run started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from riverbed.kafka_admin import apply_topics
from riverbed.logs import configure_logging
from riverbed.settings import Settings, SettingsError, load_settings


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


def say(message: str) -> None:
    print(f"[riverbed] {message}", file=sys.stderr, flush=True)


def start_broker(settings: Settings) -> bool:
    """Start the local broker if Riverbed manages one; True when this call started it."""
    if not settings.manages_local_broker:
        say(f"using the Kafka cluster at {settings.bootstrap_servers}")
        return False
    from riverbed.broker import LocalBroker

    broker = LocalBroker(settings)
    already = broker.status().running
    status = broker.start()
    say(status.message)
    return not already


def spawn(name: str, argv: list[str], settings: Settings) -> Child:
    log_dir = settings.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(
        argv,
        env={**os.environ, **settings.to_env()},
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
    )
    say(f"started {name} (pid {process.pid}), log: {log_dir / f'{name}.log'}")
    return Child(name, process)


def stop_children(children: list[Child], timeout: float = 30.0) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout
    for child in reversed(children):
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
        say(f"stopped {child.name}")


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    settings.home.mkdir(parents=True, exist_ok=True)

    started_broker = start_broker(settings)
    children: list[Child] = []
    try:
        for result in apply_topics(settings):
            say(f"topic {result.summary()}")
        python = sys.executable
        children.append(
            spawn("producer", [python, "-m", "riverbed.cli", "produce", "payments"], settings)
        )
        say(f"producing to {settings.bootstrap_servers} at {settings.producer_rate:g} events/s")
        say(f"runtime state in {settings.home}; press Ctrl-C to stop everything")
        while all(c.process.poll() is None for c in children):
            time.sleep(1)
        for child in children:
            if child.process.poll() is not None:
                say(f"{child.name} exited with status {child.process.returncode}; stopping")
        return 1
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        stop_children(children)
        if started_broker:
            from riverbed.broker import LocalBroker

            say(LocalBroker(settings).stop().message)


if __name__ == "__main__":
    sys.exit(main())
