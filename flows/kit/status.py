"""The flow's status file: counters a Dagster sensor (or a person) can read.

One JSON file per flow process, written atomically (temp file + rename) after
every flush: ``<flows_dir>/payments/status.json`` for a single process,
``status-<process id>.json`` for each process of a multi-process run (each
covers the Kafka partitions that process's sinks own). :func:`read_status`
merges them.

Counters count since the process started (so after a crash they restart from
zero, and a replayed batch counts again); offsets are the group offsets the
flow committed (with its Kafka transactions), which are exact; ``lake_commits`` counts
Delta commits per dataset.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.kit.lake_outage import storage_errno
from flows.kit.records import Counts

log = logging.getLogger("riverbed.flow.status")

SCHEMA_VERSION = 2


def status_file_name(process_id: int | None) -> str:
    return "status.json" if process_id is None else f"status-{process_id}.json"


class StatusBoard:
    """Process-wide counters; sinks of every partition in the process report here."""

    def __init__(self, path: Path, *, flow: str, process_id: int | None) -> None:
        self.path = Path(path)
        self.flow = flow
        self.process_id = process_id
        self.started_at = time.time()
        self._lock = threading.Lock()  # several workers per process share it
        self.counts = Counts()
        self.commits: dict[str, int] = {}
        self.rows: dict[str, int] = {}
        self.committed_offsets: dict[str, int] = {}
        self.caught_up: dict[str, bool] = {}
        self._unwritable = False  # the last write failed (logged once until one succeeds)

    def record_flush(
        self,
        *,
        partition_key: str | None,
        counts: Counts | None,
        commits: dict[str, int],
        rows: dict[str, int],
        committed_offset: int | None,
        caught_up: bool | None = None,
    ) -> None:
        with self._lock:
            if counts is not None:
                self.counts.add(counts)
            for dataset, n in commits.items():
                self.commits[dataset] = self.commits.get(dataset, 0) + n
            for dataset, n in rows.items():
                self.rows[dataset] = self.rows.get(dataset, 0) + n
            if partition_key is not None and committed_offset is not None:
                self.committed_offsets[partition_key] = committed_offset
            if partition_key is not None and caught_up is not None:
                self.caught_up[partition_key] = caught_up
            self._write()

    def as_dict(self) -> dict[str, Any]:
        c = self.counts
        return {
            "schema": SCHEMA_VERSION,
            "flow": self.flow,
            "process_id": self.process_id,
            "pid": os.getpid(),
            "started_at": _iso(self.started_at),
            "updated_at": _iso(time.time()),
            "processed": c.processed,
            "valid": c.valid,
            "invalid": c.invalid,
            "late": c.late,
            "resent": c.resent,
            "alerts": dict(sorted(c.alerts.items())),
            "lake_commits": dict(sorted(self.commits.items())),
            "rows_committed": dict(sorted(self.rows.items())),
            "committed_offsets": dict(sorted(self.committed_offsets.items())),
            "caught_up": dict(sorted(self.caught_up.items())),
        }

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            temp.write_text(json.dumps(self.as_dict(), indent=1))
            os.replace(temp, self.path)
        except OSError as exc:
            # A full disk must not stop the flow over its status file: the next flush
            # writes it again (the lake's own waits are in flows.kit.lake_outage).
            if storage_errno(exc) is None:
                raise
            temp.unlink(missing_ok=True)
            if not self._unwritable:
                log.warning(
                    "status file not written", extra={"path": str(self.path), "err": str(exc)}
                )
            self._unwritable = True
            return
        self._unwritable = False


def read_status(flow_dir: Path) -> list[dict[str, Any]]:
    """Every status file of a flow (one per process), oldest process id first."""
    out = []
    for path in sorted(Path(flow_dir).glob("status*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # replaced while we read it: the next read gets it
    return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
