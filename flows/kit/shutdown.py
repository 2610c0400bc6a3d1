"""Ctrl-C and SIGTERM stop a flow at a clean point, never in the middle of a step.

Python's default SIGINT handler raises KeyboardInterrupt wherever the main thread
is. In a Bytewax worker that is inside a step (a sink halfway through a commit, a
source mid-poll), and Bytewax 0.21 then dies with a panic instead of stopping. So
the first SIGINT or SIGTERM only sets a flag; every Kafka source partition then ends
its input (``StopIteration``), Bytewax drains what is in flight, the sinks commit it
in ``close()``, and the process exits 0. A second signal, more than
:data:`REPEAT_AFTER_S` later, interrupts at once, as an impatient Ctrl-C expects (crash
safety covers that too); sooner, it is the same stop arriving twice (a Ctrl-C reaches
the whole process group, and ``riverbed flow run`` forwards it as well).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

log = logging.getLogger("riverbed.flow")

REPEAT_AFTER_S = 3.0

_requested = threading.Event()
_first_at: list[float] = []


def _on_signal(signum: int, _frame: object) -> None:
    if _requested.is_set():
        if time.monotonic() - _first_at[0] > REPEAT_AFTER_S:
            raise KeyboardInterrupt
        return
    _first_at[:] = [time.monotonic()]
    _requested.set()
    log.warning(
        "stopping: ending the input, then committing what is in flight",
        extra={"signal": signal.Signals(signum).name},
    )


def install() -> None:
    """Route SIGINT and SIGTERM through :func:`requested` (main thread only, as Python
    requires; a flow built elsewhere, in a test, keeps the default handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)


def requested() -> bool:
    """A stop was asked for: sources end their input."""
    return _requested.is_set()


def reset() -> None:
    _requested.clear()
