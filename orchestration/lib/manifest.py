"""What the lake has committed, summarised from its manifest (see ``riverbed.lake``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from riverbed.lake import read_manifest


@dataclass(frozen=True)
class DatasetCommits:
    files: int
    rows: int
    last_committed_at: float | None  # unix seconds


def dataset_commits(lake_dir: Path, domain: str, dataset: str) -> DatasetCommits:
    """Files and rows committed so far, and when the last one was."""
    entries = read_manifest(lake_dir, dataset, domain)
    stamps = [
        datetime.fromisoformat(e["committed_at"]).timestamp()
        for e in entries
        if e.get("committed_at")
    ]
    return DatasetCommits(
        files=len(entries),
        rows=sum(int(e.get("rows", 0)) for e in entries),
        last_committed_at=max(stamps, default=None),
    )
