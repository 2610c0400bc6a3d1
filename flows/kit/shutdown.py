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

"Later" is counted between the signals' *arrivals*, not between the runs of a Python
handler: Python runs a handler only when the main thread next executes Python code,
and a flow's main thread can sit for seconds in one Kafka call (``init_transactions``
while a new cluster's transaction coordinator loads). A Ctrl-C and its forwarded copy,
milliseconds apart, were then handled seconds apart and taken for an impatient second
Ctrl-C, interrupting the flow while it was being built. So a watcher thread stamps each
arrival from Python's signal wakeup fd (:func:`signal.set_wakeup_fd`: the interpreter
writes the signal's number there the instant it arrives) and decides; the handler only
raises when the watcher said so.

``riverbed flow run`` asks its processes to stop through a pipe instead
(:data:`STOP_FD_ENV`, see :mod:`flows.kit.runner`; :func:`follow_parent` reads it): a
stop asked for while the process was still starting waits there instead of being lost,
and it is never an impatient repeat.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import socket
import threading
import time

log = logging.getLogger("riverbed.flow")

REPEAT_AFTER_S = 3.0
#: The environment variable naming the file descriptor of a process's stop pipe.
STOP_FD_ENV = "RIVERBED_STOP_FD"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested = threading.Event()
_first_at: list[float] = []
_first_lock = threading.Lock()  # the signal watcher and the pipe reader may race
_interrupt = threading.Event()  # the watcher saw an impatient repeat
_installed: list[socket.socket] = []  # the wakeup socket pair, once installed


def _on_signal(_signum: int, _frame: object) -> None:
    # The stop itself is the watcher's (_arrived); here, only the impatient repeat,
    # raised in the main thread, where KeyboardInterrupt belongs.
    if _interrupt.is_set():
        raise KeyboardInterrupt


def _request(by: str) -> bool:
    """Ask for the stop (the first time only); whether this was the first time."""
    with _first_lock:
        if _requested.is_set():
            return False
        _first_at[:] = [time.monotonic()]
        _requested.set()
    log.warning("stopping: ending the input, then committing what is in flight", extra={"by": by})
    return True


def _arrived(signum: int) -> None:
    """A stop signal arrived (called by the watcher thread the moment it did)."""
    name = signal.Signals(signum).name
    if _request(name) or _interrupt.is_set():
        return
    if time.monotonic() - _first_at[0] > REPEAT_AFTER_S:
        log.warning("stopping now: a second stop signal", extra={"signal": name})
        _interrupt.set()
        _thread.interrupt_main(signal.SIGINT)  # runs _on_signal in the main thread


def _read_stop_pipe(fd: int) -> None:
    try:
        asked = os.read(fd, 1)
    except OSError:
        return
    if asked:  # nothing: the parent is gone without asking (it was killed); run on
        _request("riverbed flow run")


def _watch(reader: socket.socket) -> None:
    while True:
        try:
            data = reader.recv(64)
        except OSError:
            return
        if not data:
            return
        for signum in data:
            if signum in _STOP_SIGNALS:
                _arrived(signum)


def install() -> None:
    """Route SIGINT and SIGTERM through :func:`requested` (main thread only, as Python
    requires; a flow built elsewhere, in a test, keeps the default handlers). Once per
    process: ``flows.run`` installs them first thing, and the flow again as it opens."""
    if threading.current_thread() is not threading.main_thread() or _installed:
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)  # the interpreter writes from its C signal handler
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    _installed.extend((reader, writer))
    threading.Thread(target=_watch, args=(reader,), daemon=True, name="stop-signals").start()
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _on_signal)


def follow_parent() -> None:
    """Read the stop pipe ``riverbed flow run`` gave this process, if it gave one
    (``flows.run`` calls it once its logging is set up: a stop asked for before waits
    in the pipe). Popped from the environment, so that a process this one starts does
    not take the descriptor for its own."""
    stop_fd = os.environ.pop(STOP_FD_ENV, None)
    if stop_fd:
        threading.Thread(
            target=_read_stop_pipe, args=(int(stop_fd),), daemon=True, name="stop-pipe"
        ).start()


def requested() -> bool:
    """A stop was asked for: sources end their input."""
    return _requested.is_set()


def report_stopped() -> None:
    """Log that the flow ended after a requested stop, and how long that took."""
    if _requested.is_set():
        log.warning(
            "stopped: what was in flight is committed",
            extra={"after_s": round(time.monotonic() - _first_at[0], 2)},
        )


def reset() -> None:
    _requested.clear()
    _interrupt.clear()
