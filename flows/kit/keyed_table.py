"""The table side of a stream-table join: the latest value per key, applied in order.

A compacted topic partitioned like the stream (the batch layer's profiles or
baselines) is read beside it (:class:`flows.kit.kafka_source.TableReader`). A value
read is not in force at once: it waits in a heap until the stream reaches its Kafka
timestamp, so it changes decisions only for the events after it in the stream, and a
replay of a backlog decides as the live run did. A value older than the one in force
(read again after a restart) never replaces it; a tombstone (no value) withdraws the
key. Keys with no value in force get ``None``: each rule says what it does then.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from flows.kit.records import RawRecord

log = logging.getLogger("riverbed.flow.table")

V = TypeVar("V")


class KeyedTable(Generic[V]):
    """Per key, the value in force and the values read but not yet in force."""

    def __init__(self) -> None:
        self.in_force: dict[str, tuple[int, V]] = {}  # key -> (Kafka timestamp ms, value)
        self.pending: list[tuple[int, int, str, V | None]] = []  # (ts ms, offset, key, value)

    def __bool__(self) -> bool:
        return bool(self.in_force)

    def read(self, records: list[RawRecord], decode: Callable[[bytes], V]) -> None:
        """Queue the table topic's records; one ``decode`` refuses is skipped, with a
        warning (the batch layer wrote it: never a reason to stop the stream)."""
        for offset, key, value, ts_ms in records:
            if key is None:
                continue
            name = key.decode(errors="replace")
            if value is None:
                heapq.heappush(self.pending, (ts_ms, offset, name, None))
                continue
            try:
                decoded = decode(value)
            except Exception as exc:
                log.warning("unreadable table record", extra={"offset": offset, "err": str(exc)})
                continue
            heapq.heappush(self.pending, (ts_ms, offset, name, decoded))

    def due(self, ts_ms: int) -> bool:
        """Whether a queued value comes into force at or before ``ts_ms``."""
        return bool(self.pending) and self.pending[0][0] <= ts_ms

    def apply_upto(self, ts_ms: int) -> None:
        """Put in force every queued value stamped at or before ``ts_ms``."""
        pending, in_force = self.pending, self.in_force
        while pending and pending[0][0] <= ts_ms:
            since_ms, _offset, key, value = heapq.heappop(pending)
            current = in_force.get(key)
            if current is not None and current[0] > since_ms:
                continue
            if value is None:
                in_force.pop(key, None)
            else:
                in_force[key] = (since_ms, value)

    def get(self, key: str) -> V | None:
        found = self.in_force.get(key)
        return None if found is None else found[1]
