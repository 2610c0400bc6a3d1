"""Stateful steps whose state is one picklable object (a merger, a join).

(The per-partition processors run in the source instead: :mod:`flows.kit.processing`.)

Bytewax's ``stateful_map`` snapshots its state with ``copy.deepcopy``, which is several
times slower than pickling for the per-card or per-device state the flows hold; these
steps snapshot the pickled object instead (bytes are immutable, so Bytewax may keep
the snapshot without copying it).
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from bytewax.operators import StatefulBatchLogic

log = logging.getLogger("riverbed.flow")

In = TypeVar("In")
Out = TypeVar("Out")
S = TypeVar("S")


class _PickledLogic(StatefulBatchLogic[In, Out, bytes], Generic[In, Out, S]):
    def __init__(
        self,
        state: S | None,
        create: Callable[[In], S],
        run: Callable[[S, list[In]], list[Out]],
    ) -> None:
        self.state = state
        self.create = create
        self.run = run

    def on_batch(self, values: list[In]) -> tuple[list[Out], bool]:
        if self.state is None:
            self.state = self.create(values[0])
        return self.run(self.state, values), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickled(self.state)


def pickled(state: object) -> bytes:
    """``state`` pickled for a recovery snapshot, logged (size and time) at DEBUG."""
    began = time.monotonic()
    blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    log.debug(
        "snapshot",
        extra={
            "state": type(state).__name__,
            "bytes": len(blob),
            "ms": round((time.monotonic() - began) * 1000),
        },
    )
    return blob


def pickled_step(
    create: Callable[[In], S],
    run: Callable[[S, list[In]], list[Out]],
    resumed: Callable[[S], object] | None = None,
) -> Callable[[bytes | None], StatefulBatchLogic[In, Out, bytes]]:
    """A builder for ``op.stateful_batch``: the state is ``create(first value)`` on first
    use, or the snapshot unpickled (then ``resumed(state)``, to give it what is not in
    the snapshot, such as settings); each batch is ``run(state, values)``."""

    def build(resume: bytes | None) -> StatefulBatchLogic[In, Out, bytes]:
        state: S | None = None
        if resume is not None:
            state = pickle.loads(resume)
            if resumed is not None:
                resumed(state)
        return _PickledLogic(state, create, run)

    return build
