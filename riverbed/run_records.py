"""What the platform's batch jobs did, kept on disk for ``riverbed metrics``.

A warehouse build or a lake compaction runs for seconds, every few minutes, inside a
Dagster run: too short-lived for Prometheus to scrape. Prometheus's advice for batch
jobs is to export when the job last succeeded and how long it took; its Pushgateway
would be one more server to run, so each job writes its record to a small JSON file
under ``RIVERBED_HOME/runs/`` instead (the pattern of node_exporter's textfile
collector), and the state exporter (:mod:`riverbed.state_metrics`) reads the files on
every scrape. The run counts live in the file, so they survive a restart of Dagster
or of the exporter and never count a run twice.

One file per job and subject (``warehouse_build.json``,
``lake_compaction-payments.transactions.json``), updated under a file lock, written
atomically: a reader sees the previous record or the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from riverbed.files import write_atomically
from riverbed.settings import Settings


@dataclass
class RunRecord:
    """A job's runs so far, and its latest one."""

    succeeded: int = 0
    failed: int = 0
    last_finished_at: float | None = None  # seconds since the epoch
    last_duration_s: float | None = None
    last_ok: bool | None = None
    last_success_at: float | None = None
    # Running sums of what the successful runs did (rows built, files compacted...).
    totals: dict[str, float] = field(default_factory=dict)


def runs_dir(settings: Settings) -> Path:
    return settings.home / "runs"


def _path(settings: Settings, job: str, subject: str | None) -> Path:
    return runs_dir(settings) / (f"{job}-{subject}.json" if subject else f"{job}.json")


def read_all(settings: Settings) -> dict[tuple[str, str | None], RunRecord]:
    """Every record, by (job, subject); an unreadable file is skipped (it is replaced
    whole, so only a foreign file can be)."""
    found = {}
    for path in sorted(runs_dir(settings).glob("*.json")):
        job, _, subject = path.stem.partition("-")
        try:
            found[job, subject or None] = RunRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
    return found


def record(
    settings: Settings,
    job: str,
    *,
    subject: str | None = None,
    duration_s: float,
    ok: bool,
    totals: dict[str, float] | None = None,
) -> RunRecord:
    """Add one finished run to ``job``'s record (``subject``: what it ran on)."""
    path = _path(settings, job, subject)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        try:
            kept = RunRecord(**json.loads(path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            kept = RunRecord()
        now = time.time()
        kept.last_finished_at, kept.last_duration_s, kept.last_ok = now, duration_s, ok
        if ok:
            kept.succeeded += 1
            kept.last_success_at = now
            for name, value in (totals or {}).items():
                kept.totals[name] = kept.totals.get(name, 0) + value
        else:
            kept.failed += 1
        write_atomically(path, json.dumps(asdict(kept), indent=2))
    return kept


@contextlib.contextmanager
def timed(
    settings: Settings, job: str, *, subject: str | None = None
) -> Iterator[dict[str, float]]:
    """Record the run of the ``with`` body: failed if it raises. The body fills the
    dict it is given with its totals."""
    totals: dict[str, float] = {}
    began = time.monotonic()
    try:
        yield totals
    except BaseException:
        record(settings, job, subject=subject, duration_s=time.monotonic() - began, ok=False)
        raise
    record(
        settings, job, subject=subject, duration_s=time.monotonic() - began, ok=True, totals=totals
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
