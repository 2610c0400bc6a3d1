"""A source of prepared SourceBatch items with one part per Kafka partition, as
:class:`flows.kit.kafka_source.KafkaPartitionedSource` has: what a flow's
``build_flow`` reads (each part's batches in order; the part ends after its last)."""

from __future__ import annotations

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows.kit.kafka_source import part_name, part_number
from flows.kit.records import SourceBatch


class _Part(StatefulSourcePartition[SourceBatch, int]):
    def __init__(self, batches: list[SourceBatch], position: int) -> None:
        self._batches = batches
        self._next = position

    def next_batch(self) -> list[SourceBatch]:
        if self._next >= len(self._batches):
            raise StopIteration
        self._next += 1
        return [self._batches[self._next - 1]]

    def snapshot(self) -> int:
        return self._next


class BatchSource(FixedPartitionedSource[SourceBatch, int]):
    def __init__(self, topic: str, batches: list[SourceBatch]) -> None:
        self._topic = topic
        self._by_partition: dict[int, list[SourceBatch]] = {}
        for batch in batches:
            self._by_partition.setdefault(batch.partition, []).append(batch)

    def list_parts(self) -> list[str]:
        return [part_name(self._topic, p) for p in sorted(self._by_partition)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Part:
        return _Part(self._by_partition[part_number(for_part)], resume_state or 0)
