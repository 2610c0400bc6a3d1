"""One running copy of a flow per ``RIVERBED_HOME``: a lock file, checked at start.

Two copies of a flow on one machine share the recovery store and the lake; the
Kafka transactions and the Delta versions would fence one of them, but only after
both started writing. This lock stops the second copy before it does anything, with
a message that says who holds the flow. It is an ``flock``
(:mod:`riverbed.locks`: released by the kernel when the holder dies, however it dies), so
a crashed flow never leaves it behind.

A single process (no ``-i``) reads every partition: it takes the flow's lock
exclusively. Process ``i`` of a multi-process run (``-i i -a …``) takes it shared,
plus ``process-<i>.lock`` exclusively: the processes of one run share the flow, and
anything else (a single process, a second run's process ``i``) is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from riverbed import locks


class FlowAlreadyRunning(RuntimeError):
    """Another copy of this flow holds its lock."""


_held: list[IO[str]] = []  # open for the life of the process: closing releases the lock


def _take(path: Path, flow: str, *, shared: bool = False) -> None:
    try:
        _held.append(locks.hold(path, shared=shared))
    except locks.Held as held:
        raise FlowAlreadyRunning(
            f"the {flow} flow is already running here ({held.holder}, lock {path}); a second "
            "copy would write the same lake and topics. Stop the running one first (Dagster's "
            "stop_flow job, or Ctrl-C where it runs), or use another RIVERBED_HOME"
        ) from None


def hold(flow_dir: Path, flow: str, process_id: int | None) -> None:
    """Take this process's share of the flow's lock, or raise :class:`FlowAlreadyRunning`."""
    if process_id is None:
        _take(flow_dir / "flow.lock", flow)
        return
    _take(flow_dir / "flow.lock", flow, shared=True)
    _take(flow_dir / f"process-{process_id}.lock", flow)
