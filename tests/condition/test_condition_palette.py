"""Pseudo-colour palette: class hues, brightness from attenuation, configurable thresholds."""

from __future__ import annotations

import numpy as np

from edge.condition import palette_rgb
from edge.config.condition import PaletteConfig


def _rgb(z: float, t: float, palette: PaletteConfig | None = None) -> tuple[int, int, int]:
    out = palette_rgb(np.array([z]), np.array([t]), palette or PaletteConfig())[0]
    return int(out[0]), int(out[1]), int(out[2])


def test_class_hues() -> None:
    r, g, b = _rgb(7.4, 0.3)  # water: organic orange
    assert r > g > b
    r, g, b = _rgb(13.0, 0.3)  # aluminium: green
    assert g > r and g > b
    r, g, b = _rgb(26.0, 0.3)  # steel: blue
    assert b > g > r


def test_air_white_impenetrable_black_and_darkening() -> None:
    assert _rgb(7.4, 1.0) == (255, 255, 255)
    assert _rgb(26.0, 0.01) == (0, 0, 0)
    assert _rgb(0.0, 0.014) == (0, 0, 0)
    values = [sum(_rgb(13.0, t)) for t in (0.9, 0.6, 0.3, 0.1, 0.03)]
    assert values == sorted(values, reverse=True) and values[0] > values[-1] + 200


def test_thresholds_are_configurable() -> None:
    default = _rgb(12.0, 0.3)
    wide_organic = _rgb(12.0, 0.3, PaletteConfig(organic_max_z=14.0, metal_min_z=20.0))
    assert default[1] > default[0]  # green by default
    assert wide_organic[0] > wide_organic[1]  # orange once organics reach Z 14
    assert _rgb(0.0, 0.1, PaletteConfig(impenetrable_t_high=0.2)) == (0, 0, 0)


def test_blend_is_smooth_across_a_boundary() -> None:
    z = np.linspace(8.0, 12.0, 81)
    rgb = palette_rgb(z, np.full_like(z, 0.2), PaletteConfig(blend_z=1.0)).astype(int)
    assert np.abs(np.diff(rgb, axis=0)).max() <= 12  # no jump between neighbouring Z values
    sharp = palette_rgb(z, np.full_like(z, 0.2), PaletteConfig(blend_z=0.0)).astype(int)
    assert np.abs(np.diff(sharp, axis=0)).max() > 50
