"""One Delta commit per dataset per flush, for every Kafka partition a process reads.

Bytewax gives each Kafka partition its own sink partition; committing from each would
make six commits per flush (one per partition) and a log that grows six times as fast.
The partition sinks of a process therefore *stage* their rows and progress here, and
the first of them to flush commits everything staged, for all of them, in one commit
per dataset whose application transactions carry every partition's next offset
(see :class:`riverbed.lake.TableWriter`). The others then find nothing new.

A flow's datasets (:class:`StreamDatasets`): its *events* (payments' ``transactions``)
and its *alerts*. Committed versions are per dataset: the events dataset is committed
whenever a partition moved (even with no valid row, so its offsets always move with the
input); the alerts dataset only when it has rows (alerts are rare; an idle alerts
table commits nothing). A replay skips a row whose offset is below its dataset's committed version.

A flush that comes due while the flow runs goes *behind* the worker
(:meth:`LakeCommitter.flush_behind`): it takes what is staged and commits it on the
committer's own thread while the worker reads, processes and publishes the next batches
(alerts included; Parquet encoding and delta-rs release the GIL). One runs at a time,
and the next flush, a Bytewax snapshot or a close first waits for it and raises what it
failed with. A snapshot and a close flush in place, so a recovery snapshot never gets
ahead of the lake.

The lake is committed first, then each partition's Kafka transaction (with the group
offset): a flush's Kafka commits never come before its lake commits. A Kafka commit
carries at least the offset its transaction's records cover
(:class:`flows.kit.kafka_outputs.KafkaOutputs`), which may be past what that flush's
lake commit holds: a restart reads from the older of the two, and each side skips what
it has. A lake write that fails on the lake's storage (a full disk, see
:mod:`flows.kit.lake_outage`) is retried until it succeeds; meanwhile every partition's
Kafka side is held (its open transaction aborted, what the worker publishes kept and not
sent, nothing committed) until the lake commit lands. Fencing does not depend on the
order: a stale copy's Delta commit is refused by the writer generations
(:class:`riverbed.lake.TableWriter`), its Kafka commit by the broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pyarrow as pa

from flows.kit.lake_outage import storage_errno, until_written
from flows.kit.metrics import FlowMetrics
from riverbed import lake

log = logging.getLogger("riverbed.flow.lake")

T = TypeVar("T")


@dataclass(frozen=True)
class StreamDatasets:
    """Where a flow's rows go: ``lake/<domain>/<events>`` and ``lake/<domain>/<alerts>``.

    ``alerts_table`` turns the domain's alert records of one partition into rows of
    its alerts dataset (with the three offset columns).
    """

    domain: str
    events: str
    alerts: str
    alerts_table: Callable[[list, str, int], pa.Table]

    @property
    def names(self) -> tuple[str, str]:
        return (self.events, self.alerts)


@dataclass
class _Staged:
    tables: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    # The rows' Kafka timestamps (ms), beside them, when the flow keeps metrics.
    produced_ms: list[pa.Array] = field(default_factory=list)


@dataclass
class _Job:
    """One flush: what was staged when it was taken, and every partition's progress."""

    staged: dict[str, _Staged]
    progress: dict[int, int]


class LakeCommitter:
    """The process's writer of the datasets that come straight from one topic."""

    _shared: dict[tuple[str, str, str], LakeCommitter] = {}
    _shared_lock = threading.Lock()

    def __init__(self, lake_dir: Path, topic: str, datasets: StreamDatasets) -> None:
        self.topic = topic
        self.datasets = datasets
        self.lake_dir = Path(lake_dir)
        self._commit_kafka: dict[int, Callable[[], object]] = {}
        self._hold_kafka: dict[int, Callable[[], object]] = {}
        self._release_kafka: dict[int, Callable[[], object]] = {}
        self.writers = {
            ds: self._written(
                lambda ds=ds: lake.TableWriter(lake_dir, ds, datasets.domain), f"open {ds}"
            )
            for ds in datasets.names
        }
        self._lock = threading.RLock()
        self._staged = {ds: _Staged() for ds in datasets.names}
        self._progress: dict[int, int] = {}  # partition -> next offset staged so far
        # Whether each partition's latest batch was caught up, and whether the process
        # has read from a backlog since it was last all caught up (see due()).
        self._caught_up: dict[int, bool] = {}
        self._in_backlog = False
        self._last_flush = time.monotonic()
        self.commits: list[lake.Commit] = []  # the latest flush's, for status and metrics
        self.metrics: FlowMetrics | None = None  # set by the flow (flows.kit.metrics)
        self._pool: ThreadPoolExecutor | None = None  # Kafka commits, see _commit_all_kafka
        # The flush running behind the worker (flush_behind), at most one.
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-flush")
        self._behind: Future | None = None
        # The workers of a process share the committer: one of them at a time takes a
        # flush, after the one running behind.
        self._gate = threading.Lock()
        self._on_tick: list[Callable[[], object]] = []

    @classmethod
    def shared(cls, lake_dir: Path, topic: str, datasets: StreamDatasets) -> LakeCommitter:
        """The process's committer for ``topic`` into ``lake_dir`` (created on first use)."""
        key = cls._shared_key(lake_dir, topic, datasets)
        with cls._shared_lock:
            committer = cls._shared.get(key)
            if committer is None:
                committer = cls._shared[key] = cls(lake_dir, topic, datasets)
            return committer

    @staticmethod
    def _shared_key(lake_dir: Path, topic: str, datasets: StreamDatasets) -> tuple[str, str, str]:
        return (str(Path(lake_dir).resolve()), topic, datasets.domain)

    def claim(
        self,
        partition: int,
        commit_kafka: Callable[[], object],
        hold_kafka: Callable[[], object] | None = None,
        release_kafka: Callable[[], object] | None = None,
    ) -> dict[str, int]:
        """Take ``partition`` over: per dataset, the next offset already in the lake (0: none).

        ``commit_kafka`` runs after every lake commit that may hold the partition's
        rows: the partition sink commits its Kafka transaction there, with the group
        offset the lake now holds. ``hold_kafka`` runs when the lake refuses writes for
        a while (:mod:`flows.kit.lake_outage`): the sink aborts its open transaction, keeping
        its records (and what it publishes meanwhile) until ``release_kafka``, called when a
        flush's lake commits landed, before its Kafka commits.
        """
        app = lake.app_id(self.topic, partition)
        # Bytewax may build a partition's sink while another one's flush runs behind: the
        # take-over is a commit to the same tables, and two at once would conflict.
        with self._gate, self._lock:
            self._wait()
            self._commit_kafka[partition] = commit_kafka
            if hold_kafka is not None:
                self._hold_kafka[partition] = hold_kafka
            if release_kafka is not None:
                self._release_kafka[partition] = release_kafka
            out = {}
            for ds in self.datasets.names:
                writer = self.writers[ds]
                # Newest wins: an older copy writing this partition is refused from now.
                self._written(
                    lambda w=writer: w.take_over([lake.writer_app_id(self.topic, partition)]),
                    f"take over {ds}",
                )
                out[ds] = writer.claim([app])[app] or 0
            return out

    def release(self, partition: int) -> None:
        """Forget ``partition``, whose sink closed after its last flush: later flushes no
        longer commit its Kafka transaction. The last partition released takes the
        committer out of :meth:`shared`, so that nothing keeps a closed flow's sinks, and
        their Kafka clients, alive in a process that runs flows one after another."""
        with self._gate, self._lock:
            self._wait()
            for callbacks in (self._commit_kafka, self._hold_kafka, self._release_kafka):
                callbacks.pop(partition, None)
            self._progress.pop(partition, None)
            self._caught_up.pop(partition, None)
            if self._commit_kafka:
                return
        key = self._shared_key(self.lake_dir, self.topic, self.datasets)
        with self._shared_lock:
            if self._shared.get(key) is self:  # not so for one made without shared()
                del self._shared[key]

    def on_tick(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` at every :meth:`tick`.

        The partition sinks of a process tick after every batch, and a source sends one
        every ~0.5 s even when no message arrives. A sink of the process that flushes on
        an interval but only gets items now and then (an upsert sink: windows are
        emitted when they close) hangs its due check here, so the last rows it got are
        written within an interval, not when the next window closes or at the next
        recovery snapshot (two minutes: the last windows of a drain waited that long).
        """
        with self._lock:
            self._on_tick.append(callback)

    def tick(self) -> None:
        with self._lock:
            callbacks = list(self._on_tick)
        for callback in callbacks:
            callback()

    def hold_kafka(self) -> None:
        """Abort every partition's open Kafka transaction, keeping its records: the lake
        is unavailable, and a transaction left open while the flow waits would time out
        and get its producer fenced."""
        for partition in sorted(self._hold_kafka):
            self._hold_kafka[partition]()

    def _written(self, write: Callable[[], T], what: str) -> T:
        return until_written(write, lake_dir=self.lake_dir, what=what, on_outage=self.hold_kafka)

    def stage(
        self,
        partition: int,
        next_offset: int,
        events: pa.Table | None,
        alerts: pa.Table | None,
        events_produced_ms: pa.Array | None = None,
        *,
        caught_up: bool = False,
        backlog: bool = False,
    ) -> None:
        """Add a partition's rows and progress to the next commit (with, for the
        metrics, the events' Kafka timestamps), and whether the batch was caught up or
        read from a backlog (:class:`flows.kit.records.SourceBatch`)."""
        with self._lock:
            self._caught_up[partition] = caught_up
            if backlog:
                self._in_backlog = True
            for ds, table in zip(self.datasets.names, (events, alerts), strict=True):
                if table is not None and table.num_rows:
                    staged = self._staged[ds]
                    staged.tables.append(table)
                    staged.rows += table.num_rows
            if events_produced_ms is not None:
                self._staged[self.datasets.events].produced_ms.append(events_produced_ms)
            if next_offset > self._progress.get(partition, -1):
                self._progress[partition] = next_offset

    def due(self, interval_s: float, max_rows: int) -> bool:
        """Time for the process's next flush: the interval since the last one (whichever
        partition made it) has passed, enough rows are staged, or a backlog just ended.

        A backlog ends when every partition of the process is caught up after one of
        them read a full batch (row-count flushes on the way do not end it). Its last
        rows would otherwise wait out the rest of the interval: a drain of 1,000,000
        events sat idle for 2.5-4 s of its ~18 before its last commit (py-spy, 2026-12-02).
        Live traffic hardly ever fills a batch: it still commits once per interval.
        """
        with self._lock:
            staged = sum(s.rows for s in self._staged.values())
            return (
                time.monotonic() - self._last_flush >= interval_s
                or staged >= max_rows
                or (self._in_backlog and self._all_caught_up())
            )

    def _all_caught_up(self) -> bool:
        return all(self._caught_up.get(p, False) for p in self._commit_kafka)

    def flush(self) -> list[lake.Commit]:
        """Commit what every partition staged, now: the lake's alerts, then its events,
        then each partition's Kafka transaction (after any flush still running behind).

        Alerts first: a crash between the two leaves alerts ahead, and a replay, which
        starts at the events' version at the latest, skips them by theirs. A lake
        write that fails on its storage is retried until it succeeds; until then no
        Kafka transaction commits (:mod:`flows.kit.lake_outage`).
        """
        with self._gate:
            self._wait()
            return self._run(self._take())

    def flush_behind(self, done: Callable[[list[lake.Commit]], object] | None = None) -> None:
        """:meth:`flush` on the committer's own thread, so the worker goes on reading and
        processing (and alerts go out) while Parquet is written and Delta commits: at
        5,000 events/s a flush held the worker 150-250 ms every 5 s. At most one runs:
        this waits for the previous one, and raises what it failed with. ``done(commits)``
        runs on that thread when it landed."""
        with self._gate:
            self._wait()
            job = self._take()

            def run() -> None:
                commits = self._run(job)
                if done is not None:
                    done(commits)

            self._behind = self._flusher.submit(run)

    def wait(self) -> None:
        """Until the flush running behind (if any) is done; raises what it failed with
        (a fenced writer, a commit that cannot be made) in the caller, the worker."""
        with self._gate:
            self._wait()

    def _wait(self) -> None:
        behind, self._behind = self._behind, None
        if behind is not None:
            behind.result()

    def _take(self) -> _Job:
        with self._lock:
            self._last_flush = time.monotonic()
            if self._in_backlog and self._all_caught_up():
                self._in_backlog = False  # this flush is the one that ends it
            job = _Job(dict(self._staged), dict(self._progress))
            self._staged = {ds: _Staged() for ds in self.datasets.names}
            return job

    def _run(self, job: _Job) -> list[lake.Commit]:
        began = time.monotonic()
        commits = []
        for ds in (self.datasets.alerts, self.datasets.events):
            commit = self._written(lambda ds=ds: self._flush_dataset(ds, job), f"commit {ds}")
            if commit is not None:
                commits.append(commit)
        for partition in sorted(self._release_kafka):
            self._release_kafka[partition]()
        self._commit_all_kafka(sorted(job.progress))
        self.commits = commits
        if self.metrics is not None:
            self.metrics.flush_seconds.observe(time.monotonic() - began)
        return commits

    def _commit_all_kafka(self, partitions: list[int]) -> None:
        """Every partition's Kafka transaction, side by side: each is a round trip or two
        to the transaction coordinator (~10-20 ms) that releases the GIL, and one after
        the other they made a flush of six partitions ~100 ms longer, a stall every
        alert arriving meanwhile waited out."""
        if len(partitions) <= 1:
            for partition in partitions:
                self._commit_kafka[partition]()
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(thread_name_prefix="kafka-commit")
        # list(): wait for all, and raise the first failure (a fenced producer) here.
        list(self._pool.map(lambda p: self._commit_kafka[p](), partitions))

    def _flush_dataset(self, ds: str, job: _Job) -> lake.Commit | None:
        writer = self.writers[ds]
        staged = job.staged[ds]
        moved = {
            lake.app_id(self.topic, p): offset
            for p, offset in job.progress.items()
            if offset > (writer.expected(lake.app_id(self.topic, p)) or 0)
        }
        if not moved or (ds == self.datasets.alerts and not staged.rows):
            return None
        if staged.tables:
            # One chunk: a live flush holds hundreds of small batches, and Parquet writes
            # a table of many chunks 3-4x slower (measured: 120 vs 30 ms for 25,000 rows
            # in 600 chunks), which every alert waiting behind the flush would feel.
            rows = pa.concat_tables(staged.tables).combine_chunks()
        else:
            rows = lake.SCHEMAS[ds].empty_table()
        began = time.monotonic()
        try:
            commit = writer.append(rows, moved)
        except Exception as exc:
            if storage_errno(exc) is None or not _landed(writer, moved):
                raise
            # The commit is in the log; what failed came after it (delta-rs's checkpoint
            # after every hundredth commit). Retrying it would commit the rows twice.
            log.warning(
                "lake commit landed, then a step after it failed; not committing it again",
                extra={"dataset": ds, "lake": str(self.lake_dir)},
                exc_info=True,
            )
            commit = lake.Commit(ds, writer.table.version(), rows.num_rows, 0.0)
        job.staged[ds] = _Staged()  # landed: a retry of this job must not write it again
        if ds == self.datasets.events and self.metrics is not None:
            # Counted once: only new rows are staged.
            self.metrics.lake_committed(rows, pa.chunked_array(staged.produced_ms, pa.int64()))
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


def _landed(writer: lake.TableWriter, versions: dict[str, int]) -> bool:
    """Whether the table already records exactly ``versions`` (a commit that landed
    although its call failed); if so, the writer now expects them."""
    try:
        writer.refresh()
    except Exception:  # the log cannot even be read: certainly not known to have landed
        return False
    stored = {app: writer.table.transaction_version(app) for app in versions}
    if any(stored[app] is None or int(stored[app]) != v for app, v in versions.items()):
        return False
    writer.claim(versions)
    return True
