"""Shared base for every config section: unknown keys are errors, values are immutable after load.

Validators here and in the section modules are pure: no file reads, no device probes. Checks that need the
filesystem (does the bundle exist? is the serial port there?) belong in ``edge.config.preflight``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class EdgeBaseConfig(BaseModel):
    """Base model: ``extra="forbid"`` so a typo is an error, ``frozen`` so nothing mutates config at runtime."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
