"""``service:`` section: the process's own housekeeping (status file, metrics endpoint, stop and stall times)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator

from edge.config.base import EdgeBaseConfig


class ServiceConfig(EdgeBaseConfig):
    """How the running service reports on itself and stops."""

    status_file: Path = Field(
        Path("/run/edge/status.json"), description="JSON snapshot rewritten every second; read by `edge status`"
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="serve Prometheus /metrics on metrics_address:PORT; absent = off"
    )
    metrics_address: str = Field(
        "127.0.0.1", description="IP address /metrics listens on: 127.0.0.1 (this box only, the default), an "
        "interface's address, or 0.0.0.0 / :: (every interface)"
    )
    stop_timeout_s: float = Field(
        20.0, gt=0, le=600, description="seconds to finish in-flight items on SIGTERM (keep < TimeoutStopSec)"
    )
    journal: Path | None = Field(
        None, description="SQLite intake journal: items accepted and not yet decided and stored, so a crash loses "
        "none; absent = intake.sqlite3 beside the MQTT outbox (mqtt.outbox.path)"
    )
    stall_s: float = Field(
        30.0, gt=0, le=3600, description="no stage progress for this long with items in flight = stalled (no watchdog)"
    )

    @field_validator("metrics_address")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address; expected e.g. 127.0.0.1, 0.0.0.0 or ::1") from None
        return value
