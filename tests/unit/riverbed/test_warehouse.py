"""One writer at a time for the DuckDB warehouse; readers read a published copy.

Real DuckDB and real dbt: a dbt process takes the writer lock itself (the dbt-duckdb
plugin), so a second build waits or fails naming the holder; a reader of the
published copy keeps reading while builds run and publish.
"""

import contextlib
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Event
from pathlib import Path

import duckdb
import pytest

from riverbed.settings import load_settings
from riverbed.warehouse import (
    WarehouseBusy,
    connect_readonly,
    lock_path,
    publish_read_copy,
    writer_lock,
)
from tests.support.lake_fixture import dbt_command, run_dbt

# A build of fct_transactions, what it reads, and the tests on them alone.
ONE_MART = ("--select", "+fct_transactions", "--indirect-selection", "cautious")


def hold_lock(home: str, seconds: float, ready: Event) -> None:
    settings = load_settings(home=Path(home))
    with writer_lock(settings):
        ready.set()
        time.sleep(seconds)


@contextlib.contextmanager
def lock_held_elsewhere(home: Path, seconds: float = 3.0) -> Iterator[int]:
    """Another process holds the warehouse's writer lock for ``seconds``; its pid."""
    ready = multiprocessing.Event()
    holder = multiprocessing.Process(target=hold_lock, args=(str(home), seconds, ready))
    holder.start()
    try:
        assert ready.wait(10)
        assert holder.pid is not None
        yield holder.pid
    finally:
        holder.join()


def test_a_second_writer_waits_then_fails_clearly(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    with lock_held_elsewhere(tmp_path) as holder_pid:
        started = time.monotonic()
        busy = pytest.raises(WarehouseBusy, match=rf"being written by pid {holder_pid}")
        with busy, writer_lock(settings, timeout=1.0):
            pass
        assert time.monotonic() - started >= 1.0
        # Once the holder is done, the waiting writer gets in.
        with writer_lock(settings, timeout=10.0):
            pass


def test_readers_read_the_published_tables_only(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    with pytest.raises(FileNotFoundError):
        connect_readonly(settings)
    with writer_lock(settings), duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute("create table t as select 42 as answer")
        con.execute("create view v as select * from t")
    assert publish_read_copy(settings) == settings.warehouse_read_path
    with connect_readonly(settings) as reader:
        assert reader.execute("select answer from t").fetchone() == (42,)
        views = reader.execute("select count(*) from duckdb_views() where not internal")
        assert views.fetchone() == (0,)
    # no temporary file is left beside the copy
    assert sorted(p.name for p in tmp_path.iterdir() if "warehouse-read" in p.name) == [
        "warehouse-read.duckdb"
    ]


def test_publishing_waits_for_the_writer(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    with (
        lock_held_elsewhere(tmp_path) as holder_pid,
        pytest.raises(WarehouseBusy, match=rf"pid {holder_pid}"),
    ):
        publish_read_copy(settings, timeout=0.5)


# Queries the copy it opened until the stop file appears; prints how many it ran.
READER = """
import os, sys, duckdb
path, stop = sys.argv[1], sys.argv[2]
con = duckdb.connect(path, read_only=True)
queries = 0
while not os.path.exists(stop):
    con.execute("select count(*) from fct_transactions").fetchall()
    queries += 1
print(queries)
"""


def test_a_reader_of_the_copy_and_builds_never_break_each_other(tmp_path: Path) -> None:
    home = tmp_path / "riverbed"
    home.mkdir()
    settings = load_settings(home=home)
    # A first copy to read: the table the reader queries (the whole build is below).
    first = run_dbt(home, "build", *ONE_MART)
    assert first.ok, first.output[-4000:]
    publish_read_copy(settings)
    stop = tmp_path / "stop"
    # another process holds the published copy open and queries it the whole time
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(settings.warehouse_read_path), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # A build, then its copy published over the one the reader holds open (one round:
        # a second one would replace a copy nobody holds, which proves nothing more).
        result = run_dbt(home, "build")
        assert result.ok, result.output[-4000:]
        publish_read_copy(settings)
        with connect_readonly(settings) as fresh:  # a new reader gets the new copy
            assert fresh.execute("select count(*) from fct_transactions").fetchone() == (0,)
        assert reader.poll() is None, reader.stderr.read() if reader.stderr else ""
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert int(out) > 0


def test_a_second_dbt_build_waits_for_the_lock_or_fails_naming_the_holder(
    tmp_path: Path,
) -> None:
    home = tmp_path / "riverbed"
    home.mkdir()
    # A dbt process that holds the warehouse until this test lets it go: its query reads a
    # named pipe, which blocks until something writes to it (no race with a fixed delay).
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    argv, env = dbt_command(home, "show", "--inline", f"select * from read_csv('{gate}')",
                            target="first")  # fmt: skip
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    third: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 60
        lock = lock_path(home / "warehouse.duckdb")
        while not (lock.exists() and "(dbt)" in lock.read_text()):
            assert first.poll() is None and time.monotonic() < deadline, "no lock taken"
            time.sleep(0.1)
        # a build that may wait starts now, and gets in once the first one is done (of
        # one mart: the lock is the dbt process's, whatever it builds)
        argv, env = dbt_command(home, "build", *ONE_MART, target="third")
        third = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # meanwhile a build that may not wait fails at once, naming the running build
        second = run_dbt(home, "build", extra_env={"RIVERBED_WAREHOUSE_LOCK_TIMEOUT_S": "0.5"})
        assert not second.ok
        assert f"being written by pid {first.pid}" in second.output, second.output[-3000:]
        assert third.poll() is None, "the waiting build did not wait"
    finally:
        _open_gate(gate, first)
        first.wait(timeout=120)
        if third is not None:
            third_output = third.communicate(timeout=300)[0].decode(errors="replace")
    assert first.returncode == 0
    assert third.returncode == 0, third_output[-4000:]


def _open_gate(gate: Path, reader: subprocess.Popen[bytes]) -> None:
    """Let the process reading ``gate`` finish (kill it if it never opened the pipe)."""
    try:
        fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # nobody reads the pipe: the process failed before its query
        if reader.poll() is None:
            reader.kill()
        return
    with os.fdopen(fd, "w") as pipe:
        pipe.write("released\n1\n")
