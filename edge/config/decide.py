"""``decide:`` section: deadlines and queue bounds that make the box fail-safe under load."""

from __future__ import annotations

from pydantic import Field

from edge.config.base import EdgeBaseConfig


class DecideConfig(EdgeBaseConfig):
    """Per-item deadline and pipeline bounds."""

    deadline_s: float = Field(
        10.0, gt=0, le=600, description="seconds from item end until the diverter; later items are UNSCREENED"
    )
    workers: int = Field(
        2, ge=1, le=64, description="items screened at once, each by one worker running every stage; one per core"
    )
    queue_depth: int = Field(8, ge=1, le=1000, description="items waiting for a worker before intake refuses")
    source_stall_s: float = Field(
        5.0, gt=0, le=600, description="seconds an open item may wait for frames before it is UNSCREENED"
    )
