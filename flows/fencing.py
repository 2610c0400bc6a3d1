"""What a flow does when it finds it has been fenced: say so, then stop.

A sink that raises makes Bytewax 0.21 panic without printing the Python error, so the
reason would be lost. Fencing is the one error an operator must read (a second copy
of the flow is running), so it is logged, at error level, before the sink raises.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from flows.kafka_outputs import ProducerFenced
from riverbed.lake import FencedWriter

log = logging.getLogger("riverbed.flow")


@contextlib.contextmanager
def stops_when_fenced() -> Iterator[None]:
    try:
        yield
    except (ProducerFenced, FencedWriter) as exc:
        log.error(f"fenced, stopping: {exc}")
        raise
