"""Start a flow of several processes without Timely's one-second connect retry.

Bytewax runs a flow of N processes as a Timely Dataflow cluster: process i listens on
its address for the processes above it and connects to every process below it, and no
worker starts before the cluster is complete. A refused connection is retried after a
fixed one-second sleep (``start_connections`` in timely's ``networking.rs``, which
Bytewax 0.21 does not let us configure). The processes of a flow start together and
take about the same time to import and build the dataflow, so process 1 often tries
a few milliseconds before process 0 has bound its port, and then every process of the
flow starts a second late: "worker 1: error connecting to worker 0 ... retrying" in the
flow's log, and ~1 s of a two-process 1M-event drain that takes ~8 s.

So before Bytewax's ``cli_main``, a process waits until the ports of the processes
below it are listening. It looks at the machine's listening sockets rather than
connecting: Timely would take a probe connection for a worker and fail its handshake.
An address on another host cannot be seen that way and is not waited for (Timely's own
retry applies there), and the wait is bounded: it only ever saves time, never adds a
failure.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable

import psutil

log = logging.getLogger("riverbed.flow")

WAIT_S = 30.0
POLL_S = 0.01


def _local_port(address: str) -> int | None:
    """The port of ``host:port`` when the host is this machine; None otherwise."""
    host, _, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not port.isdigit():
        return None
    if host == "localhost":
        return int(port)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None  # a host name: it may be any machine
    if ip.is_loopback:
        return int(port)
    own = {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    return int(port) if str(ip) in own else None


def listening_ports() -> set[int]:
    """The TCP ports this machine listens on (any process)."""
    return {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}


def wait_for_lower_processes(
    addresses: list[str] | None,
    process_id: int | None,
    *,
    timeout_s: float = WAIT_S,
    stop: Callable[[], bool] = lambda: False,
) -> bool:
    """Wait until processes ``0 .. process_id - 1`` of ``addresses`` listen; True when
    they all do. False at once for process 0, a single process or an address on another
    host; False after ``timeout_s``, or as soon as ``stop()`` is true."""
    if not addresses or not process_id:
        return False
    ports = [_local_port(a) for a in addresses[:process_id]]
    wanted = {p for p in ports if p is not None}
    if len(wanted) < len(ports):
        return False
    began = time.monotonic()
    while not stop():
        try:
            listening = listening_ports()
        except psutil.Error:  # not allowed to see the sockets here: Timely's retry, then
            return False
        if wanted <= listening:
            log.debug(
                "lower flow processes listening",
                extra={"ports": sorted(wanted), "waited_s": round(time.monotonic() - began, 3)},
            )
            return True
        if time.monotonic() - began > timeout_s:
            return False
        time.sleep(POLL_S)
    return False
