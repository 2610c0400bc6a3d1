"""A process of a multi-process flow waits for the lower processes' listeners, with real
sockets (flows.kit.cluster_start), instead of Timely's one-second connect retry."""

from __future__ import annotations

import socket
import threading

from flows.kit import cluster_start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_process_waits_until_the_lower_processes_listen() -> None:
    low, mine = _free_port(), _free_port()
    addresses = [f"127.0.0.1:{low}", f"127.0.0.1:{mine}"]
    result: list[bool] = []
    waiter = threading.Thread(
        target=lambda: result.append(cluster_start.wait_for_lower_processes(addresses, 1))
    )
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive(), "returned before process 0 listened"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", low))
        listener.listen()
        waiter.join(10)
        assert result == [True]
        # nothing connected to it: Timely would take a probe for a worker
        listener.setblocking(False)
        try:
            listener.accept()
            connected = True
        except BlockingIOError:
            connected = False
        assert not connected


def test_process_zero_a_single_process_and_other_hosts_do_not_wait() -> None:
    port = _free_port()  # nothing listens there
    assert cluster_start.wait_for_lower_processes([f"127.0.0.1:{port}"] * 2, 0) is False
    assert cluster_start.wait_for_lower_processes(None, None) is False
    # a host name or another machine's address cannot be seen without connecting
    for other in ("flow-0.example:2101", "192.0.2.10:2101"):
        assert cluster_start.wait_for_lower_processes([other, "127.0.0.1:1"], 1) is False


def test_the_wait_ends_at_its_timeout_or_at_a_stop() -> None:
    addresses = [f"127.0.0.1:{_free_port()}", "127.0.0.1:1"]
    assert cluster_start.wait_for_lower_processes(addresses, 1, timeout_s=0.05) is False
    assert cluster_start.wait_for_lower_processes(addresses, 1, stop=lambda: True) is False
    assert cluster_start._local_port("localhost:2101") == 2101
    assert cluster_start._local_port("[::1]:2101") == 2101
