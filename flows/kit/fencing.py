"""A sink that fails says why before it stops the flow.

A sink that raises makes Bytewax 0.21 panic ("Box<dyn Any>") and abort without
printing the Python error, so the reason would be lost. Every call Bytewax makes into
a Riverbed sink runs inside :func:`reported`, which logs the error first: fencing (a
second copy of the flow took over, the one error an operator must read) and a stop
while the lake was unavailable as a plain line, anything else with its traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from flows.kit.kafka_outputs import ProducerFenced
from flows.kit.lake_outage import LakeUnavailable
from riverbed.lake import FencedWriter

log = logging.getLogger("riverbed.flow")


@contextlib.contextmanager
def reported() -> Iterator[None]:
    try:
        yield
    except (ProducerFenced, FencedWriter) as exc:
        log.error(f"fenced, stopping: {exc}")
        raise
    except LakeUnavailable as exc:
        log.error(str(exc))
        raise
    except Exception:
        log.exception("sink failed, stopping (the flow resumes from its last commit)")
        raise
