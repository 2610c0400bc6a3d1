"""The Kafka side of a flow's partition sink, recorded in memory.

For dataflow tests under ``bytewax.testing`` that check the lake; what reaches Kafka
(transactions, fencing) is covered against the real broker by tests/integration.
"""

from __future__ import annotations

from flows.kit.records import Alert, DlqRecord


class RecordingOutputs:
    """The Kafka side of a partition sink, recorded (the real one: tests/integration)."""

    def __init__(self) -> None:
        self.dlq: list[DlqRecord] = []
        self.alerts: list[Alert] = []
        self.commits: list[int] = []
        self.committed = 0

    def publish(self, dlq: list[DlqRecord], alerts: list[Alert], through: int | None = None) -> int:
        self.dlq.extend(dlq)
        self.alerts.extend(alerts)
        return len(dlq) + len(alerts)

    def due(self) -> bool:
        return False

    def commit(self, next_offset: int) -> bool:
        self.commits.append(next_offset)
        self.committed = next_offset
        return True

    def hold(self) -> None:
        pass

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass
