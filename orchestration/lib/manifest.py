"""What the lake has committed, read from its manifest (``lake/_manifest/<domain>/*.jsonl``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class DatasetCommits:
    files: int
    rows: int
    last_committed_at: float | None  # unix seconds


def dataset_commits(lake_dir: Path, domain: str, dataset: str) -> DatasetCommits:
    """Files and rows committed so far; a torn last line (a writer died mid-append) is skipped."""
    path = lake_dir / "_manifest" / domain / f"{dataset}.jsonl"
    files = rows = 0
    last: float | None = None
    try:
        text = path.read_text()
    except FileNotFoundError:
        return DatasetCommits(0, 0, None)
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        files += 1
        rows += int(entry.get("rows", 0))
        committed = entry.get("committed_at")
        if committed:
            stamp = datetime.fromisoformat(committed).timestamp()
            last = stamp if last is None else max(last, stamp)
    return DatasetCommits(files, rows, last)
