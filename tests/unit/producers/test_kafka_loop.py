"""The sending loop lets go of its Kafka client when it returns."""

from __future__ import annotations

import os
import time

from producers.kafka_loop import produce


def native_threads() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/task"))


def test_produce_leaves_no_client_threads_behind() -> None:
    # librdkafka runs threads of its own per client: while a client lives, they are
    # here (and keep reconnecting to a cluster that is gone, printing as they do).
    before = native_threads()
    summary = produce(
        [(b"key", b"value")],
        topic="nowhere",
        config={"bootstrap.servers": "127.0.0.1:9", "log_level": "0"},
        count=1,
        flush_timeout_s=0.5,
    )
    assert (summary.sent, summary.undelivered) == (1, 1)
    deadline = time.monotonic() + 5
    while native_threads() > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert native_threads() == before
