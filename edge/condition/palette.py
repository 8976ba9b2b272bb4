"""The operator pseudo-colour palette: hue from effective Z, brightness from high-energy attenuation.

Where it sits: conditioning. ``edge.condition.conditioner`` evaluates :func:`palette_rgb` once on the effective-Z
grid to get a colour table laid out like the lookup, so each pixel's colour costs one remap at run time.
PHYSICS.md: organic orange (Z ≲ ``organic_max_z``), mixed / light inorganic green, metal blue
(Z ≳ ``metal_min_z``), air white, impenetrable (T_high below ``impenetrable_t_high``) black. Hues blend
smoothly over ``blend_z`` either side of each class boundary, so Z noise does not speckle the image.

Must not: depend on any scanner calibration (it maps Z and transmission to colour, nothing more).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from edge.config.condition import PaletteConfig

ORGANIC_RGB = np.array([240.0, 145.0, 30.0])
MIXED_RGB = np.array([50.0, 180.0, 60.0])
METAL_RGB = np.array([35.0, 100.0, 230.0])
WHITE_RGB = np.array([255.0, 255.0, 255.0])

SATURATION_ATTENUATION = 0.35
"""High-energy attenuation at which the hue reaches 63% saturation: thin material is pale, thick is deep."""


def _smoothstep(x: NDArray[np.float64]) -> NDArray[np.float64]:
    x = np.clip(x, 0.0, 1.0)
    return np.asarray(x * x * (3.0 - 2.0 * x), dtype=np.float64)


def hue_rgb(z: NDArray[np.floating], palette: PaletteConfig) -> NDArray[np.float64]:
    """``(..., 3)`` fully saturated class colour of effective Z (0-255 float)."""
    z = np.asarray(z, dtype=np.float64)[..., None]
    w = max(palette.blend_z, 1e-6)
    to_mixed = _smoothstep((z - palette.organic_max_z + w) / (2 * w))
    to_metal = _smoothstep((z - palette.metal_min_z + w) / (2 * w))
    rgb = ORGANIC_RGB * (1 - to_mixed) + MIXED_RGB * to_mixed
    return np.asarray(rgb * (1 - to_metal) + METAL_RGB * to_metal, dtype=np.float64)


def palette_rgb(z: NDArray[np.floating], t_high: NDArray[np.floating], palette: PaletteConfig) -> NDArray[np.uint8]:
    """``(..., 3) uint8`` RGB of pixels with effective Z ``z`` and high-energy transmission ``t_high``.

    Air is white, saturation grows with attenuation, value falls to black at ``impenetrable_t_high`` and
    stays black below it.
    """
    t = np.clip(np.asarray(t_high, dtype=np.float64), 1e-12, 1.0)
    att = -np.log(t)[..., None]
    sat = 1.0 - np.exp(-att / SATURATION_ATTENUATION)
    black = -math.log(max(palette.impenetrable_t_high, 1e-12))
    value = np.clip(1.0 - att / black, 0.0, 1.0) ** 0.8
    rgb = value * ((1.0 - sat) * WHITE_RGB + sat * hue_rgb(z, palette))
    return np.asarray(np.clip(np.rint(rgb), 0, 255), dtype=np.uint8)
