"""The dbt-duckdb plugin of Riverbed's warehouse (``plugins:`` in ``dbt/profiles.yml``).

Why a plugin: every dbt process that opens the warehouse, whoever starts it (a person
at the shell, Dagster, a test), must

1. obey the single-writer rule: it takes :func:`riverbed.warehouse.acquire_writer_lock`
   when dbt opens the warehouse and holds it until the process exits, so a second build
   waits, then fails with a message naming the holder, instead of failing halfway on
   DuckDB's file lock;
2. read the Delta lake with DuckDB's ``delta`` extension loaded from the installed
   ``duckdb-ext-delta`` package (:func:`riverbed.lake.duckdb_config`), never
   downloading anything at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

from dbt.adapters.duckdb.plugins import BasePlugin
from duckdb import DuckDBPyConnection

from riverbed import lake
from riverbed.warehouse import DEFAULT_LOCK_TIMEOUT_S, acquire_writer_lock

# The lock of this process, held until it exits (the OS releases it then).
_held_locks: dict[str, IO[str]] = {}


class Plugin(BasePlugin):
    """Writer lock and the delta extension for dbt-duckdb.

    Profile config (all optional): ``lock_timeout_s`` (seconds a build waits for
    another build's lock, default 300).
    """

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self.lock_timeout_s = float(plugin_config.get("lock_timeout_s") or DEFAULT_LOCK_TIMEOUT_S)
        path = getattr(self.creds, "path", None)
        if path and path != ":memory:" and path not in _held_locks:
            # Held until the process exits: dbt closes and reopens its connection
            # between nodes, and no other writer may get in between.
            _held_locks[path] = acquire_writer_lock(Path(path), self.lock_timeout_s, holder="dbt")

    def update_connection_config(self, creds: Any, config: dict[str, Any]) -> None:
        config.update(lake.duckdb_config())

    def configure_connection(self, conn: DuckDBPyConnection) -> None:
        conn.execute("load delta")
