"""A sink that fails says why before it stops the flow; a fenced copy stops at once.

A sink that raises makes Bytewax 0.21 panic ("Box<dyn Any>") and abort without
printing the Python error, so the reason would be lost. Every call Bytewax makes into
a Riverbed sink runs inside :func:`reported`, which logs the error first: fencing (a
second copy of the flow took over, the one error an operator must read) and a stop
while the lake was unavailable as a plain line, anything else with its traceback.

A fenced copy can commit nothing more: the broker refuses its producers'
transactions and the lake its writers' commits. Letting the error unwind through
Bytewax would still call every other partition's ``close()``, each a flush, a lake
commit and Kafka calls that can only be refused (some after their 30 s timeouts),
before Bytewax aborts with a Rust backtrace per partition. So a flow process
(:mod:`flows.run`, which calls :func:`exit_when_fenced`) logs the reason and exits
with :data:`FENCED_EXIT` right there, as a crash would, which the flow survives: a
restart resumes from the last commit. In-process callers (the tests) get the error.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from flows.kit.kafka_outputs import ProducerFenced
from flows.kit.lake_outage import LakeUnavailable
from riverbed.lake import FencedWriter

log = logging.getLogger("riverbed.flow")

#: A flow process's exit status once another copy took over (EX_NOPERM: this copy
#: may no longer write).
FENCED_EXIT = 77

_exit_on_fence = False


def exit_when_fenced() -> None:
    """From now on this process exits with :data:`FENCED_EXIT` when it finds itself fenced."""
    global _exit_on_fence
    _exit_on_fence = True


@contextlib.contextmanager
def reported() -> Iterator[None]:
    try:
        yield
    except (ProducerFenced, FencedWriter) as exc:
        log.error(f"fenced, stopping: {exc}")
        if _exit_on_fence:
            logging.shutdown()
            os._exit(FENCED_EXIT)
        raise
    except LakeUnavailable as exc:
        log.error(str(exc))
        raise
    except Exception:
        log.exception("sink failed, stopping (the flow resumes from its last commit)")
        raise
