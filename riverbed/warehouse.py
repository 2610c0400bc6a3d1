"""The DuckDB warehouse file: one writer at a time, readers while nobody writes.

DuckDB itself refuses a second process that opens the file for writing; this
lock makes Riverbed's own writers (the warehouse build) queue politely and
fail with a message that says who holds the file, instead of failing halfway.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

import duckdb

from riverbed.settings import Settings


class WarehouseBusy(RuntimeError):
    """Another process is writing the warehouse."""


@contextlib.contextmanager
def writer_lock(settings: Settings, timeout: float = 300.0) -> Iterator[None]:
    """Hold the warehouse's write lock; wait up to ``timeout`` seconds for it."""
    settings.home.mkdir(parents=True, exist_ok=True)
    path = settings.warehouse_path.with_suffix(".duckdb.lock")
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise WarehouseBusy(
                        f"{settings.warehouse_path} is being written by {holder} for more than "
                        f"{timeout:.0f} s; wait for that build to finish, then retry"
                    ) from None
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def connect_readonly(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A read-only connection, for dashboards and people; fails while a build writes."""
    return duckdb.connect(str(settings.warehouse_path), read_only=True)
