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


class QualityConfig(EdgeBaseConfig):
    """Image-quality gate before detection (``edge.condition.quality``): an item without usable X-ray data is
    UNSCREENED with the reason, never screened (and so never CLEAR). Defaults checked on 1,000 normal items of the
    virtual scanner (docs/conditioning.md, "Image-quality gate")."""

    enabled: bool = Field(True, description="run the gate; false only for diagnostics")
    dark_transmission: float = Field(
        0.02, gt=0.0, lt=0.5,
        description="flat-fielded transmission (0 = dark level, 1 = air) at or below which a pixel shows no X-ray",
    )
    min_lit_fraction: float = Field(
        0.05, ge=0.0, le=1.0,
        description="fewer high-energy pixels above dark_transmission than this fraction = no_xray",
    )
    full_scale_counts: int = Field(65535, ge=255, le=65535, description="ADC full scale in raw counts")
    max_saturated_fraction: float = Field(
        0.01, ge=0.0, le=1.0, description="more raw pixels at full scale (either energy) than this fraction = saturated"
    )
    max_missing_line_fraction: float = Field(
        0.005, ge=0.0, le=1.0,
        description="more belt lines dark (or constant) across the whole detector than this fraction = lines_missing",
    )
    max_dead_column_fraction: float = Field(
        0.01, ge=0.0, le=1.0,
        description="more channels dark or constant along the whole item than this fraction = dead_columns "
        "(channels the flat-field marked dead are filled and not counted)",
    )
    degraded_black_level: int = Field(
        8, ge=0, le=254, description="degraded (pseudo-colour/grey) images: a pixel at or below this in every "
        "channel is black (no X-ray)"
    )
    degraded_white_level: int = Field(
        247, ge=1, le=255, description="degraded images: a pixel at or above this in every channel is white (air)"
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
    quality: QualityConfig = Field(default_factory=QualityConfig, description="image-quality gate before detection")
