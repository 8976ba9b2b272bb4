"""``localise:`` section: how an anomalous object is outlined, and its sub-component parts (SLIC superpixels).

Read by ``edge.stages.localise`` only. The part cap (``max_segments`` at most 24) is also the bound the MQTT item
schema puts on ``objects[].parts``, so a valid config can never produce a record its own schema refuses.
``min_segments <= max_segments`` is checked by ``check_segment_order`` in ``edge.config.root``.
"""

from __future__ import annotations

from pydantic import Field

from edge.config.base import EdgeBaseConfig

MAX_PARTS = 24
"""Most parts published per object (the item schema's ``maxItems``)."""


class LocaliseConfig(EdgeBaseConfig):
    """Sub-component localisation (seed 002): superpixels inside each anomalous object, each scored by the map."""

    subparts: bool = Field(
        True, description="segment every anomalous object with an anomaly map into scored parts (red/green)"
    )
    max_objects_with_parts: int = Field(
        4, ge=0, le=1000,
        description="parts for at most this many anomalous objects per item, highest scores first (each costs "
                    "~15 ms; an item whose every box alarms must not run into its deadline); 0 = none",
    )
    segment_area_px: int = Field(
        400, ge=16, le=100_000,
        description="target area of one part in X-ray pixels; parts per object = object material area / this",
    )
    min_segments: int = Field(4, ge=2, le=MAX_PARTS, description="fewest parts asked of SLIC for a small object")
    max_segments: int = Field(
        16, ge=2, le=MAX_PARTS, description=f"most parts asked of SLIC for a large object (at most {MAX_PARTS})"
    )
    compactness: float = Field(
        0.5, gt=0, le=100,
        description="SLIC compactness on features scaled 0..100: higher = rounder, grid-like parts, lower = parts "
                    "that follow material edges",
    )
    work_side_px: int = Field(
        96, ge=32, le=1024,
        description="longest side in pixels of the grid SLIC runs on; larger objects are shrunk to it (SLIC time "
                    "grows with pixels; the 16x16 anomaly map has no finer detail to follow)",
    )
    score_percentile: float = Field(
        90.0, ge=50, le=100,
        description="a part's score is this percentile of the anomaly map over its pixels (100 = max)",
    )
