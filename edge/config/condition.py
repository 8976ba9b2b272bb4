"""``condition:`` section: flat-field and effective-Z calibration files, and the display palette."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edge.config.base import EdgeBaseConfig


class PaletteConfig(EdgeBaseConfig):
    """Pseudo-colour class thresholds (vendors differ; keep them site-configurable)."""

    organic_max_z: float = Field(10.0, ge=1, le=100, description="effective Z up to which material is organic")
    metal_min_z: float = Field(18.0, ge=1, le=100, description="effective Z from which material is metal")
    impenetrable_t_high: float = Field(
        0.015, ge=0.0, le=0.5, description="high-energy transmission under which a pixel is impenetrable"
    )
    blend_z: float = Field(
        1.0, ge=0.0, le=10.0, description="half-width in Z of the smooth hue blend at each class boundary"
    )


class ConditionConfig(EdgeBaseConfig):
    """Where the commissioning calibrations are kept."""

    flatfield_file: Path = Field(
        Path("/var/lib/edge/calibration/flatfield.npz"), description="dark/air reference (edge calibrate flatfield)"
    )
    energy_file: Path = Field(
        Path("/var/lib/edge/calibration/energy.yaml"), description="effective-Z lookup (edge calibrate energy)"
    )
    palette: PaletteConfig = Field(default_factory=PaletteConfig, description="pseudo-colour thresholds")
