"""`make run` on a home an earlier platform used: one platform per home, and what a killed
platform left running is stopped before the next one starts its own (real processes)."""

import sys
import time
from pathlib import Path

import psutil
import pytest

from orchestration import platform
from riverbed.settings import load_settings

# A child that says when it gets SIGINT (what the platform stops its children with).
CHILD = """
import signal, sys, time
def stop(*_):
    print("stopped cleanly", flush=True)
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
print("running", flush=True)
time.sleep(600)
"""


def test_a_second_platform_on_the_same_home_stops_before_it_starts_anything(
    tmp_path: Path,
) -> None:
    settings = load_settings(home=tmp_path)
    held = platform.hold_home(settings)
    try:
        with pytest.raises(RuntimeError, match=r"already running on .* \(pid \d+ since "):
            platform.hold_home(settings)
    finally:
        held.close()
    platform.hold_home(settings).close()  # released with the file: free again


def test_what_a_killed_platform_left_running_is_stopped_at_the_next_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(home=tmp_path)
    # A platform that started two children and died without stopping them (its record
    # of them is all that is left of it).
    children = [
        platform.spawn(name, [sys.executable, "-c", CHILD], settings) for name in ("a", "b")
    ]
    logs = [tmp_path / "logs" / f"{name}.log" for name in ("a", "b")]
    deadline = time.monotonic() + 30
    while not all("running" in log.read_text() for log in logs):
        assert time.monotonic() < deadline, "the children did not start"
        time.sleep(0.1)

    held = platform.hold_home(settings)  # the next platform
    try:
        platform.stop_leftovers(settings)
    finally:
        held.close()

    for child in children:
        assert child.process.wait(5) == 0
        assert not psutil.pid_exists(child.process.pid)
    assert all("stopped cleanly" in log.read_text() for log in logs)
    err = capsys.readouterr().err
    assert "stopped b (pid" in err and "stopped a (pid" in err
    assert err.index("stopped b") < err.index("stopped a")  # the last started, first
    # Nothing is left to stop the time after.
    platform.stop_leftovers(settings)
    assert "left by an earlier run" not in capsys.readouterr().err


def test_the_first_warehouse_build_is_announced_once_when_its_copy_is_published(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(home=tmp_path)
    first = platform.FirstBuild.watch(settings)
    first.check()
    assert "takes minutes" in capsys.readouterr().err
    settings.warehouse_read_path.write_bytes(b"")  # what a build publishes, renamed into place
    first.check()
    first.check()
    said = capsys.readouterr().err
    assert said.count("warehouse built (") == 1 and str(settings.warehouse_read_path) in said
    # A home whose warehouse was built before: nothing to wait for, nothing said.
    platform.FirstBuild.watch(settings).check()
    assert capsys.readouterr().err == ""
