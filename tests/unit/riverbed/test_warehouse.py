"""One writer at a time for the DuckDB warehouse; readers while nobody writes."""

import multiprocessing
import time
from multiprocessing.synchronize import Event
from pathlib import Path

import duckdb
import pytest

from riverbed.settings import load_settings
from riverbed.warehouse import WarehouseBusy, connect_readonly, writer_lock


def hold_lock(home: str, seconds: float, ready: Event) -> None:
    settings = load_settings(home=Path(home))
    with writer_lock(settings):
        ready.set()
        time.sleep(seconds)


def test_a_second_writer_waits_then_fails_clearly(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    ready = multiprocessing.Event()
    holder = multiprocessing.Process(target=hold_lock, args=(str(tmp_path), 3.0, ready))
    holder.start()
    try:
        assert ready.wait(10)
        started = time.monotonic()
        busy = pytest.raises(WarehouseBusy, match=rf"being written by pid {holder.pid}")
        with busy, writer_lock(settings, timeout=1.0):
            pass
        assert time.monotonic() - started >= 1.0
        # Once the holder is done, the waiting writer gets in.
        with writer_lock(settings, timeout=10.0):
            pass
    finally:
        holder.join()


def test_readers_read_while_nobody_writes(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path)
    with writer_lock(settings), duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute("create table t as select 42 as answer")
    with connect_readonly(settings) as reader:
        assert reader.execute("select answer from t").fetchone() == (42,)
