"""``audit:`` section: the on-disk record of every decision, bounded by age and size."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edge.config.base import EdgeBaseConfig


class TdrConfig(EdgeBaseConfig):
    """The DICOS Threat Detection Report written beside every record, and the optional workstation drop folder."""

    enabled: bool = Field(True, description="write <record>.tdr.dcs (DICOS TDR, type MACHINE) beside every record")
    include_benign: bool = Field(
        False, description="also list the objects judged benign (flag NO_THREAT), not only those that alarmed")
    drop_folder: Path | None = Field(
        None, description="also copy each TDR into this folder for a screening workstation (atomic rename; never "
        "created by the box; a missing or full folder is logged and shown in health, the decision still lands)")
    drop_max_files: int = Field(
        10_000, ge=1, le=10_000_000,
        description="the drop folder holds at most this many reports: past it new ones are skipped (the "
        "workstation is not taking them) and health says so")
    drop_max_mb: float = Field(
        512.0, ge=1, le=10_000_000, description="the drop folder holds at most this many MB of reports (as above)")
    drop_queue: int = Field(
        256, ge=1, le=100_000,
        description="reports waiting for the drop folder's own thread; past it new ones are skipped (a hung "
        "network share never holds up a decision)")


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
    tdr: TdrConfig = Field(default_factory=TdrConfig, description="DICOS TDR per record and workstation drop folder")
