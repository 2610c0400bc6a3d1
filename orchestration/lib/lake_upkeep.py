"""Upkeep of one lake Delta table: compact its small files, then vacuum what they replaced.

The flows commit a few small files per flush, so a table's file count grows without
bound and every reader (dbt, a person's query) pays for it. Compaction rewrites the
small files of each ``event_date`` into files of ``lake_compact_target_mb``; vacuum
then deletes data files the log no longer references once they are older than
``lake_vacuum_retention_h``, long enough that no read still in flight needs them.

Safe while a flow writes: its appends only add files, so they never conflict with the
files compaction removes; the ``merchant_minute`` MERGE that loses a race to a
compaction retries (``riverbed.lake.TableWriter``), as does a compaction that loses one.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from riverbed import lake, run_records
from riverbed.settings import Settings


@dataclass(frozen=True)
class Upkeep:
    """What one upkeep of a table did, and the table after it."""

    domain: str
    dataset: str
    compaction: lake.Compaction
    vacuumed: list[str]
    after: lake.TableSummary | None
    retention_hours: float
    target_mb: int

    def metadata(self) -> dict[str, dg.RawMetadataValue]:
        c = self.compaction
        return {
            "path": f"lake/{self.domain}/{self.dataset}",
            "files_removed": c.files_removed,
            "files_added": c.files_added,
            "partitions_optimized": c.partitions_optimized,
            "version": c.version,
            "files_vacuumed": len(self.vacuumed),
            "vacuumed": dg.MetadataValue.json(self.vacuumed[:50]),  # a sample; can be many
            "files_after": self.after.files if self.after else 0,
            "rows_after": self.after.rows if self.after else 0,
            "retention_hours": self.retention_hours,
            "target_mb": self.target_mb,
        }


def upkeep(settings: Settings, domain: str, dataset: str) -> Upkeep:
    # Recorded for the metrics (riverbed_lake_compaction_*), also when it fails.
    with run_records.timed(settings, "lake_compaction", subject=f"{domain}.{dataset}") as totals:
        compaction = lake.compact(
            settings.lake_dir,
            dataset,
            domain,
            target_size=settings.lake_compact_target_mb * 1024 * 1024,
        )
        vacuumed = lake.vacuum(
            settings.lake_dir, dataset, domain, retention_hours=settings.lake_vacuum_retention_h
        )
        totals.update(
            files_removed=compaction.files_removed,
            files_added=compaction.files_added,
            files_vacuumed=len(vacuumed),
        )
    return Upkeep(
        domain=domain,
        dataset=dataset,
        compaction=compaction,
        vacuumed=vacuumed,
        after=lake.summary(settings.lake_dir, dataset, domain),
        retention_hours=settings.lake_vacuum_retention_h,
        target_mb=settings.lake_compact_target_mb,
    )
