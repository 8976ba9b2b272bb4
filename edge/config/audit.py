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
    save_inputs: bool = Field(False, description="also keep raw high/low inputs (for edge fit and audits)")
