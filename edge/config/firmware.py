"""``firmware:`` section: the serial link to the scanner's controller.

The belt encoder's scale is this section's ``encoder_counts_per_mm``: the one key for it. The controller counts
the encoder, so the link converts with it (``position_mm``) and the exit camera picks its frame by belt travel
with it (``camera.encoder_mm_per_count`` is a deprecated alias that follows it, see ``edge.config.root``).
"""

from __future__ import annotations

from pydantic import Field

from edge.config.base import EdgeBaseConfig

DEFAULT_ENCODER_COUNTS_PER_MM = 10.0
"""Encoder counts per millimetre of belt travel when the config does not say (0.1 mm a count; the virtual
scanner's ``sim.events.timeline`` default)."""

LINK_SETTLE_MARGIN_S = 0.5
"""Added to ``link_timeout_s``: how long after an item's scan the link history is final for its window, so that
an item scanned while the link was (not yet noticed) down is UNSCREENED. The pipeline holds every result this
long (the service hands ``FirmwareConfig.link_settle_s`` to the pipeline)."""


class FirmwareConfig(EdgeBaseConfig):
    """Serial link settings. Absent section = no firmware link (spool or file sources)."""

    port: str = Field(description="serial device path, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baudrate: int = Field(115200, ge=1200, le=4_000_000, description="baud rate (ignored on ptys)")
    heartbeat_s: float = Field(0.5, gt=0, le=10, description="heartbeat period in seconds, both ways")
    link_timeout_s: float = Field(2.0, gt=0, le=60, description="no frame for this long = link down")
    reconnect_min_s: float = Field(0.2, gt=0, le=60, description="first reopen delay in seconds")
    reconnect_max_s: float = Field(5.0, gt=0, le=600, description="longest reopen delay in seconds")
    command_timeout_s: float = Field(1.0, gt=0, le=30, description="give up on an unacknowledged command after this")
    command_retry_s: float = Field(0.25, gt=0, le=30,
                                   description="resend an unacknowledged command after this many seconds")
    encoder_counts_per_mm: float = Field(
        DEFAULT_ENCODER_COUNTS_PER_MM, gt=0, le=100_000,
        description="belt encoder counts per millimetre of belt travel: the one encoder scale (the link's "
        "position_mm and the exit camera's frame selection)")

    @property
    def link_settle_s(self) -> float:
        """Seconds after an item's scan until the link history for it is final (each result is held this long)."""
        return self.link_timeout_s + LINK_SETTLE_MARGIN_S
