"""``audit:`` section: the on-disk record of every decision, bounded by age and size."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edge.config.base import EdgeBaseConfig


class AuditConfig(EdgeBaseConfig):
    """Audit store location and retention."""

    directory: Path = Field(Path("/var/lib/edge/audit"), description="audit store directory")
    retention_days: float = Field(30.0, gt=0, le=3650, description="records older than this are pruned")
    quota_mb: float = Field(2048.0, ge=10, le=10_000_000, description="disk budget in MB; oldest pruned first")
    min_free_mb: float = Field(
        256.0, ge=0, le=10_000_000,
        description="free space in MB the store keeps on its file system (at most a tenth of it): below it the "
        "oldest records are pruned (the newest decision matters more than the oldest; the outbox may share the disk)",
    )
    prune_interval_s: float = Field(
        60.0, ge=1, le=86_400, description="seconds between background prunes (also run when a bound is reached)"
    )
    save_inputs: bool = Field(False, description="also keep raw high/low inputs (for edge fit and audits)")
