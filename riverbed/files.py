"""Files written whole: a reader (another process, Prometheus's file discovery) sees
the old content or the new one, never half of it."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, content: str | bytes, *, private: bool = False) -> None:
    """Write ``path`` through a temporary file beside it, renamed over it.

    ``private``: readable by this user only, from the first byte (secrets, and files
    that name where they are).
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content.encode() if isinstance(content, str) else content)
    os.replace(partial, path)
