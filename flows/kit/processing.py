"""A domain's per-partition processor, run inside the source partition that reads it.

A flow's heavy step is its processor (validation, the domain's rules, window deltas),
one per Kafka partition and stateful. Run as Bytewax's ``stateful_batch`` keyed by
partition, every batch went to the worker that key hashes to, and its output back to
the worker of the partition's sink; with two processes, measured, four partitions of
six crossed between processes twice per batch (pickled both ways), and each process
held the GIL about 45 % of the drain's wall time. Bytewax gives a partitioned source
and a partitioned sink listing the same part names to the same worker, so the
processor now runs in :class:`ProcessingSource`'s partition, right after the read:
a batch is read, processed and written on one worker, and only the small window news
travel to the one step that merges them.

The processor is part of the source partition's recovery snapshot, with the position
(:class:`PartitionState`): both are taken at the same point of the stream, so a restart
resumes the state exactly where the position says. A snapshot from before this layout
(the bare position) resumes the position with a new processor, saying so.

What the processor must offer: ``process(batch, now_us)`` for each
:class:`~flows.kit.records.SourceBatch`, picklable state, and ``configure(config)`` to
take the settings it runs with after a restore (the settings are not state).
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows.kit.kafka_source import part_number
from flows.kit.records import SourceBatch
from flows.kit.steps import pickled

log = logging.getLogger("riverbed.flow")


class Processor(Protocol):
    def process(self, batch: SourceBatch, now_us: int) -> Any: ...

    def configure(self, config: Any) -> None: ...


@dataclass(frozen=True)
class PartitionState:
    """A source partition's recovery snapshot: the read side's and the processor's."""

    source: Any  # the wrapped partition's snapshot (the Kafka position)
    processor: bytes  # the pickled processor


class _ProcessingPartition(StatefulSourcePartition[tuple[str, Any], PartitionState]):
    def __init__(self, inner: StatefulSourcePartition, processor: Processor, key: str) -> None:
        self._inner = inner
        self._processor = processor
        self._key = key

    def next_batch(self) -> list[tuple[str, Any]]:
        batches: Iterable[SourceBatch] = self._inner.next_batch()
        if not batches:
            return []
        now_us = time.time_ns() // 1000
        process = self._processor.process
        return [(self._key, process(batch, now_us)) for batch in batches]

    def next_awake(self) -> datetime | None:
        return self._inner.next_awake()

    def snapshot(self) -> PartitionState:
        return PartitionState(self._inner.snapshot(), pickled(self._processor))

    def close(self) -> None:
        self._inner.close()


class ProcessingSource(FixedPartitionedSource[tuple[str, Any], PartitionState]):
    """``inner``'s partitions, each followed by its own processor; emits
    ``(part name, processor output)``, keyed for a partitioned sink of the same parts.

    ``make(partition)`` builds a processor on first start; a restored one gets
    ``configure(config)``.
    """

    def __init__(
        self, inner: FixedPartitionedSource, make: Callable[[int], Processor], config: Any
    ) -> None:
        self._inner = inner
        self._make = make
        self._config = config

    def list_parts(self) -> list[str]:
        return self._inner.list_parts()

    def build_part(
        self, step_id: str, for_part: str, resume_state: PartitionState | Any | None
    ) -> _ProcessingPartition:
        partition = part_number(for_part)
        if isinstance(resume_state, PartitionState):
            processor: Processor = pickle.loads(resume_state.processor)
            processor.configure(self._config)
            inner_state = resume_state.source
        else:
            if resume_state is not None:
                log.warning(
                    "recovery snapshot from before the processor ran in the source: resuming "
                    "the position with empty processor state (open windows, fraud and resend "
                    "history start afresh)",
                    extra={"part": for_part},
                )
            processor = self._make(partition)
            inner_state = resume_state
        inner = self._inner.build_part(step_id, for_part, inner_state)
        # Keyed by the part's own name: the partitioned sink lists the same names.
        return _ProcessingPartition(inner, processor, for_part)
