"""``firmware:`` section: the serial link to the scanner's controller."""

from __future__ import annotations

from pydantic import Field

from edge.config.base import EdgeBaseConfig


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
    encoder_counts_per_mm: float = Field(10.0, gt=0, le=100_000,
                                         description="belt encoder counts per millimetre of belt travel")
