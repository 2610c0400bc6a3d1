"""flows.kit.kafka_outputs.OutputsInAdvance: a partition's outputs are made in a thread of
their own once its source part is built, all partitions at once, and the sink part takes
them (or makes them there and then when nothing was started)."""

from __future__ import annotations

import threading

import pytest

from flows.kit.kafka_outputs import OutputsInAdvance


def test_started_outputs_are_made_together_in_their_own_threads() -> None:
    # Each make waits for all three: made one after another, they would never meet.
    meet = threading.Barrier(3, timeout=10)
    made: list[tuple[int, str]] = []

    def make(partition: int) -> object:
        made.append((partition, threading.current_thread().name))
        meet.wait()
        return f"outputs-{partition}"

    outputs = OutputsInAdvance(make)  # type: ignore[arg-type]
    for partition in (0, 1, 2):
        outputs.start(partition)
    outputs.start(1)  # a part built again makes nothing more
    assert [outputs.take(p) for p in (2, 0, 1)] == ["outputs-2", "outputs-0", "outputs-1"]
    assert sorted(p for p, _ in made) == [0, 1, 2]
    assert all(name.startswith("kafka-outputs-") for _, name in made)


def test_outputs_never_started_are_made_by_the_caller() -> None:
    outputs = OutputsInAdvance(lambda p: (p, threading.current_thread().name))  # type: ignore[arg-type,return-value]
    assert outputs.take(4) == (4, threading.current_thread().name)


def test_an_error_in_making_them_is_raised_where_they_are_taken() -> None:
    def make(partition: int) -> object:
        raise RuntimeError(f"partition {partition}: fenced")

    outputs = OutputsInAdvance(make)  # type: ignore[arg-type]
    outputs.start(3)
    with pytest.raises(RuntimeError, match="partition 3: fenced"):
        outputs.take(3)
