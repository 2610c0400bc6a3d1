"""One Delta commit per dataset per flush, for every Kafka partition a process reads.

Bytewax gives each Kafka partition its own sink partition; committing from each would
make six commits per flush (one per partition) and a log that grows six times as fast.
The partition sinks of a process therefore *stage* their rows and progress here, and
the first of them to flush commits everything staged, for all of them, in one commit
per dataset whose application transactions carry every partition's next offset
(see :class:`riverbed.lake.TableWriter`). The others then find nothing new.

Committed versions are per dataset: ``transactions`` is committed whenever a partition
moved (even with no valid row, so its offsets always move with the input); ``alerts``
only when it has rows (alerts are rare; an idle alerts table commits nothing). A
replay skips a row whose offset is below its dataset's committed version.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from riverbed import lake

log = logging.getLogger("riverbed.flow.lake")

DATASETS = ("transactions", "alerts")


@dataclass
class _Staged:
    tables: list[pa.Table] = field(default_factory=list)
    rows: int = 0


class LakeCommitter:
    """The process's writer of the datasets that come straight from one topic."""

    _shared: dict[tuple[str, str], LakeCommitter] = {}
    _shared_lock = threading.Lock()

    def __init__(self, lake_dir: Path, topic: str) -> None:
        self.topic = topic
        self.writers = {ds: lake.TableWriter(lake_dir, ds) for ds in DATASETS}
        self._lock = threading.RLock()
        self._staged = {ds: _Staged() for ds in DATASETS}
        self._progress: dict[int, int] = {}  # partition -> next offset staged so far
        self._before_commit: dict[int, Callable[[], object]] = {}
        self._last_flush = time.monotonic()
        self.commits: list[lake.Commit] = []  # the latest flush's, for status and metrics

    @classmethod
    def shared(cls, lake_dir: Path, topic: str) -> LakeCommitter:
        """The process's committer for ``topic`` into ``lake_dir`` (created on first use)."""
        key = (str(Path(lake_dir).resolve()), topic)
        with cls._shared_lock:
            committer = cls._shared.get(key)
            if committer is None:
                committer = cls._shared[key] = cls(lake_dir, topic)
            return committer

    def claim(self, partition: int, before_commit: Callable[[], object]) -> dict[str, int]:
        """Take ``partition`` over: per dataset, the next offset already in the lake (0: none).

        ``before_commit`` runs before every lake commit that may hold the partition's
        rows: the partition sink commits its Kafka transaction there, so an instance
        that a newer one fenced on the Kafka side stops before it touches the lake.
        """
        app = lake.app_id(self.topic, partition)
        with self._lock:
            self._before_commit[partition] = before_commit
            out = {}
            for ds in DATASETS:
                # Newest wins: an older copy writing this partition is refused from now.
                self.writers[ds].take_over([lake.writer_app_id(self.topic, partition)])
                out[ds] = self.writers[ds].claim([app])[app] or 0
            return out

    def stage(
        self,
        partition: int,
        next_offset: int,
        txns: pa.Table | None,
        alerts: pa.Table | None,
    ) -> None:
        """Add a partition's rows and progress to the next commit."""
        with self._lock:
            for ds, table in (("transactions", txns), ("alerts", alerts)):
                if table is not None and table.num_rows:
                    staged = self._staged[ds]
                    staged.tables.append(table)
                    staged.rows += table.num_rows
            if next_offset > self._progress.get(partition, -1):
                self._progress[partition] = next_offset

    def due(self, interval_s: float, max_rows: int) -> bool:
        """Time for the process's next flush: the interval since the last one (whichever
        partition made it) has passed, or enough rows are staged."""
        with self._lock:
            staged = self._staged["transactions"].rows + self._staged["alerts"].rows
            return time.monotonic() - self._last_flush >= interval_s or staged >= max_rows

    def flush(self) -> list[lake.Commit]:
        """Commit what every partition staged: each partition's Kafka transaction first,
        then the lake's alerts, then its transactions.

        Alerts first: a crash between the two leaves alerts ahead, and a replay, which
        starts at the transactions' version at the latest, skips them by theirs.
        """
        with self._lock:
            self._last_flush = time.monotonic()
            for partition in sorted(self._progress):
                self._before_commit[partition]()
            commits = []
            for ds in ("alerts", "transactions"):
                commit = self._flush_dataset(ds)
                if commit is not None:
                    commits.append(commit)
            self.commits = commits
            return commits

    def _flush_dataset(self, ds: str) -> lake.Commit | None:
        writer = self.writers[ds]
        staged = self._staged[ds]
        moved = {
            lake.app_id(self.topic, p): offset
            for p, offset in self._progress.items()
            if offset > (writer.expected(lake.app_id(self.topic, p)) or 0)
        }
        if not moved or (ds == "alerts" and not staged.rows):
            return None
        rows = pa.concat_tables(staged.tables) if staged.tables else lake.SCHEMAS[ds].empty_table()
        began = time.monotonic()
        commit = writer.append(rows, moved)
        self._staged[ds] = _Staged()
        log.debug(
            "lake commit",
            extra={
                "dataset": ds,
                "rows": rows.num_rows,
                "version": commit.version,
                "ms": round((time.monotonic() - began) * 1000),
            },
        )
        return commit
