"""One running copy of a flow per ``RIVERBED_HOME``: a lock file, checked at start.

Two copies of a flow on one machine share the recovery store and the lake; the
Kafka transactions and the Delta versions would fence one of them, but only after
both started writing. This lock stops the second copy before it does anything, with
a message that says who holds the flow. It is an ``flock`` (released by the kernel
when the holder dies, however it dies), so a crashed flow never leaves it behind.

A single process (no ``-i``) reads every partition: it takes the flow's lock
exclusively. Process ``i`` of a multi-process run (``-i i -a …``) takes it shared,
plus ``process-<i>.lock`` exclusively: the processes of one run share the flow, and
anything else (a single process, a second run's process ``i``) is refused.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import IO


class FlowAlreadyRunning(RuntimeError):
    """Another copy of this flow holds its lock."""


_held: list[IO[str]] = []  # open for the life of the process: closing releases the lock


def _take(path: Path, mode: int, flow: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - kept open on purpose, see _held
    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise FlowAlreadyRunning(
            f"the {flow} flow is already running here ({holder}, lock {path}); a second copy "
            "would write the same lake and topics. Stop the running one first (Dagster's "
            "stop_flow job, or Ctrl-C where it runs), or use another RIVERBED_HOME"
        ) from None
    if mode == fcntl.LOCK_EX:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}")
        handle.flush()
    _held.append(handle)


def hold(flow_dir: Path, flow: str, process_id: int | None) -> None:
    """Take this process's share of the flow's lock, or raise :class:`FlowAlreadyRunning`."""
    if process_id is None:
        _take(flow_dir / "flow.lock", fcntl.LOCK_EX, flow)
        return
    _take(flow_dir / "flow.lock", fcntl.LOCK_SH, flow)
    _take(flow_dir / f"process-{process_id}.lock", fcntl.LOCK_EX, flow)
