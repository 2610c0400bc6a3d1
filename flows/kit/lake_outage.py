"""When the lake's storage fails for a while: wait, commit nothing, lose nothing.

A full disk (ENOSPC), a quota reached (EDQUOT), an I/O error or a filesystem gone
read-only under the lake are not reasons to stop the flow: they pass once someone
frees space or fixes the storage, and a flow that crashed on them would only be
restarted into the same error (by ``riverbed flow run`` and Dagster's liveness
sensor, each a limited number of times). So a lake write that fails with one of
them is retried, the same rows with the same offsets, with backoff, until it
succeeds (:func:`until_written`). Meanwhile:

* the worker waits inside the sink, so it reads nothing more from Kafka (the
  backlog stays in the topic, where it is safe);
* nothing is committed: no Delta commit and no Kafka transaction (the lake is
  committed before the Kafka side, see :mod:`flows.kit.lake_commits`, so the consumer
  group's offset does not move past rows that are not in the lake);
* the open Kafka transactions are aborted and their records kept, to be published
  again in the next transaction (one left open would outlive its
  ``transaction.timeout.ms`` and get the producer fenced);
* one log line says why, naming the lake, the error and what to do; another says
  when the lake took writes again.

Delta's log stays consistent: a failed write leaves at most a Parquet file no commit
lists (invisible to readers, removed by vacuum), never a partial commit. A commit
that landed before a later step failed (delta-rs writes a checkpoint after every
hundredth commit, and that write can fail on its own) is recognised by its offsets
and not made twice (:func:`flows.kit.lake_commits.LakeCommitter`).

A stop (Ctrl-C, SIGTERM) while waiting gives up: :class:`LakeUnavailable` stops the
process without committing, and the next start resumes from the last commit.
"""

from __future__ import annotations

import errno
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from flows.kit import shutdown

log = logging.getLogger("riverbed.flow.lake")

T = TypeVar("T")

#: Errors of the lake's storage that pass: what each means, and what to do about it.
TRANSIENT: dict[int, tuple[str, str]] = {
    errno.ENOSPC: (
        "no space left on device",
        "free space on the lake's disk (or grow it); the flow resumes by itself",
    ),
    errno.EDQUOT: (
        "disk quota exceeded",
        "free space or raise the quota of the lake's disk; the flow resumes by itself",
    ),
    errno.EROFS: (
        "read-only file system",
        "make the lake's filesystem writable again; the flow resumes by itself",
    ),
    errno.EIO: (
        "input/output error",
        "check the lake's disk or storage; the flow resumes by itself once it takes writes",
    ),
}

FIRST_PAUSE_S = 0.5
MAX_PAUSE_S = 10.0

# delta-rs reports I/O errors as text ("... No space left on device (os error 28)"),
# pyarrow as an OSError with its errno ("[errno 28] No space left on device").
_OS_ERROR = re.compile(r"\(os error (\d+)\)|\[errno (\d+)\]", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # delta-rs colours its error chains


class LakeUnavailable(RuntimeError):
    """Asked to stop while the lake still refused writes: nothing more was committed."""


def storage_errno(exc: BaseException) -> int | None:
    """The errno of a transient storage error behind ``exc`` (or its causes), else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in TRANSIENT:
            return current.errno
        for match in _OS_ERROR.finditer(str(current)):
            code = int(match.group(1) or match.group(2))
            if code in TRANSIENT:
                return code
        current = current.__cause__ or current.__context__
    return None


def until_written(
    write: Callable[[], T],
    *,
    lake_dir: Path,
    what: str,
    on_outage: Callable[[], object] | None = None,
) -> T:
    """``write()``, retried with backoff while it fails on a transient storage error.

    ``write`` must be safe to call again after it failed (the same rows, the same
    offsets). ``on_outage`` runs once, when the first attempt fails: the caller
    releases what must not be held while it waits (open Kafka transactions).
    """
    began: float | None = None
    attempts = 0
    pause = FIRST_PAUSE_S
    while True:
        try:
            result = write()
        except Exception as exc:
            code = storage_errno(exc)
            if code is None:
                raise
            attempts += 1
            if began is None:
                began = time.monotonic()
                # Held before it is said: the flush may run behind the worker, and once
                # the log says the lake is unavailable, nothing more goes to Kafka.
                if on_outage is not None:
                    on_outage()
                _report(code, lake_dir, what, exc)
            if _stopping_within(pause):
                raise LakeUnavailable(
                    f"stopping while the lake {lake_dir} is still unavailable "
                    f"({TRANSIENT[code][0]}): nothing more was committed; the next start "
                    "resumes from the last commit"
                ) from exc
            pause = min(pause * 2, MAX_PAUSE_S)
            continue
        if began is not None:
            log.warning(
                "lake writable again, resuming",
                extra={
                    "lake": str(lake_dir),
                    "what": what,
                    "waited_s": round(time.monotonic() - began, 1),
                    "attempts": attempts + 1,
                },
            )
        return result


def _report(code: int, lake_dir: Path, what: str, exc: BaseException) -> None:
    meaning, action = TRANSIENT[code]
    log.error(
        f"lake unavailable: {meaning}; the flow holds its batch, commits nothing (no lake "
        f"commit, no Kafka offset) and retries until the write succeeds; to resume: {action}",
        extra={
            "lake": str(lake_dir),
            "error": errno.errorcode[code],
            "what": what,
            "retry_every_s": f"{FIRST_PAUSE_S}-{MAX_PAUSE_S}",
            "detail": " ".join(_ANSI.sub("", str(exc)).replace("↳", "").split())[:300],
        },
    )


def _stopping_within(seconds: float) -> bool:
    """Sleep ``seconds``, or less if a stop is asked for; whether one was."""
    deadline = time.monotonic() + seconds
    while not shutdown.requested():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, 0.2))
    return True
