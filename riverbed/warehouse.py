"""The DuckDB warehouse file: one writer at a time; readers use a published copy.

DuckDB lets one process open a file for writing, and only while no other process
has it open at all: a person's read-only connection to ``warehouse.duckdb`` makes
every build fail with ``Could not set lock on file``. So nobody but the build opens
that file. After each build, :func:`publish_read_copy` writes a copy of its tables
to ``warehouse-read.duckdb`` (a temporary file, then an atomic rename), and readers
(:func:`connect_readonly`) open the copy: a reader holding the old copy keeps reading
it (the rename does not touch an open file), the next connection gets the new one.

Riverbed's writers take :func:`writer_lock` (or :func:`acquire_writer_lock`) first, so
they queue politely and a waiting writer is told who holds the file, instead of
failing halfway. Every ``dbt`` process takes it itself, in the dbt-duckdb plugin
(:mod:`riverbed.dbt_plugin`), so a manual ``dbt build`` and Dagster's obey one rule.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import duckdb

from riverbed.settings import Settings

DEFAULT_LOCK_TIMEOUT_S = 300.0


class WarehouseBusy(RuntimeError):
    """Another process is writing the warehouse."""


def lock_path(warehouse_path: Path) -> Path:
    """The lock file beside a warehouse file (``warehouse.duckdb.lock``)."""
    return Path(warehouse_path).with_name(Path(warehouse_path).name + ".lock")


def acquire_writer_lock(
    warehouse_path: Path, timeout: float = DEFAULT_LOCK_TIMEOUT_S, holder: str = ""
) -> IO[str]:
    """Take the warehouse's write lock, waiting up to ``timeout`` seconds.

    Returns the open lock file: the lock is held while it stays open, and the
    operating system releases it when the process exits, however it exits (so a
    killed build never leaves a stale lock). Raises :class:`WarehouseBusy`, naming
    the holder, when the wait runs out.
    """
    path = lock_path(warehouse_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - the caller owns it: it is the lock
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.seek(0)
                owner = handle.read().strip() or "unknown"
                handle.close()
                raise WarehouseBusy(
                    f"{warehouse_path} is being written by {owner} for more than "
                    f"{timeout:.0f} s; wait for that build to finish, then retry"
                ) from None
            time.sleep(0.2)
    handle.seek(0)
    handle.truncate()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    handle.write(f"pid {os.getpid()} since {stamp}" + (f" ({holder})" if holder else ""))
    handle.flush()
    return handle


def release_writer_lock(handle: IO[str]) -> None:
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


@contextlib.contextmanager
def writer_lock(
    settings: Settings, timeout: float = DEFAULT_LOCK_TIMEOUT_S, holder: str = ""
) -> Iterator[None]:
    """Hold the warehouse's write lock; wait up to ``timeout`` seconds for it.

    Not around ``dbt``: the dbt process takes the lock itself (see the module doc).
    """
    handle = acquire_writer_lock(settings.warehouse_path, timeout, holder)
    try:
        yield
    finally:
        release_writer_lock(handle)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def publish_read_copy(settings: Settings, timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> Path:
    """Publish the warehouse's tables to ``settings.warehouse_read_path``; that path.

    Call it after a build. It holds the writer lock while it reads the warehouse (so
    no build changes it meanwhile), copies every table (the marts; the staging views
    over the lake are left out, as they would need DuckDB's delta extension and the
    lake at the path they were built with) into a temporary file beside the copy, and
    renames that over the copy: a reader sees the old copy or the new one, never half
    of one. Without a warehouse yet, the copy is empty.
    """
    target = settings.warehouse_read_path
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    try:
        with writer_lock(settings, timeout, holder="publish_read_copy"):
            con = duckdb.connect(str(temp))
            try:
                if settings.warehouse_path.exists():
                    _copy_tables(con, settings.warehouse_path)
                con.execute("checkpoint")
            finally:
                con.close()
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
        Path(f"{temp}.wal").unlink(missing_ok=True)
    return target


def _copy_tables(con: duckdb.DuckDBPyConnection, warehouse_path: Path) -> None:
    # ATTACH read-only: a read never fails on the writer's file lock (we hold the
    # writer lock, so no build has it open) and never replays a WAL into it.
    path = str(warehouse_path).replace("'", "''")
    con.execute(f"attach '{path}' as warehouse (read_only)")
    try:
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() "
            "where database_name = 'warehouse' and not temporary order by all"
        ).fetchall()
        for schema, table in tables:
            con.execute(f"create schema if not exists {_quote(schema)}")
            con.execute(
                f"create table {_quote(schema)}.{_quote(table)} as "
                f"select * from warehouse.{_quote(schema)}.{_quote(table)}"
            )
    finally:
        con.execute("detach warehouse")


def connect_readonly(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the published copy, for dashboards and people.

    It never blocks a build and a build never breaks it. It sees the copy that was
    published when it connected; connect again for a newer one (DuckDB shares one
    database instance per path within a process, so close the old connection first).
    Raises ``FileNotFoundError`` before the first publish.
    """
    path = settings.warehouse_read_path
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist yet: no warehouse build has published a read copy"
        )
    return duckdb.connect(str(path), read_only=True)
