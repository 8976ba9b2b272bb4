"""``logging:`` section: structured log lines on stderr for journald."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge.config.base import EdgeBaseConfig


class LoggingConfig(EdgeBaseConfig):
    """How the service logs. The CLI's ``--log-level`` overrides ``level``."""

    level: Literal["debug", "info", "warning", "error"] = Field("info", description="minimum level logged")
    format: Literal["logfmt", "json"] = Field("logfmt", description="one line per event, logfmt or JSON")
