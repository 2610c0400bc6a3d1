"""Lock files that say who holds them.

An ``flock`` (released by the kernel when its holder dies, however it dies, so a crash
never leaves one behind) on a file whose content names the holder, for the message
that refuses a second holder.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import IO


class Held(Exception):
    """Someone else holds the lock; ``holder`` says who (as they wrote it)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def hold(path: Path, *, shared: bool = False) -> IO[str]:
    """Take the lock on ``path`` (exclusive, or shared with other shared holders) for as
    long as the returned file stays open, or raise :class:`Held`. An exclusive holder
    writes its pid and start time into the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - the caller keeps it open: that is the lock
    try:
        fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise Held(holder) from None
    if not shared:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}")
        handle.flush()
    return handle
