"""Condition stage: raw dual-energy counts (or a degraded image) to calibrated planes and model inputs.

Public surface:

- :class:`ConditionedImage`, :class:`Modality`: the conditioned item.
- :class:`Conditioner`: flat-field, effective Z and pseudo-colour from raw counts (built from calibrations).
- :func:`compose`, :class:`MissingChannelsError`, :class:`ResizeGeometry`, :func:`geometry`,
  :func:`region_of`: the model-input composer shared with ``export/``.
- :func:`from_pseudo_colour`, :func:`from_grey`: degraded modalities.
- :class:`FlatField`, :class:`FlatFieldCorrector`, :func:`load_flatfield`, :class:`EnergyCalibration`,
  :class:`RCurve`, :func:`load_energy_calibration`, :class:`ZeffLookup`, :func:`palette_rgb`: the calibrations
  and the palette.

Importing this package does no I/O.
"""

from edge.condition.composer import MissingChannelsError, ResizeGeometry, compose, geometry, region_of
from edge.condition.conditioner import Conditioner
from edge.condition.degraded import from_grey, from_pseudo_colour
from edge.condition.flatfield import T_FLOOR, FlatField, FlatFieldCorrector, load_flatfield
from edge.condition.image import ConditionedImage, Modality
from edge.condition.palette import palette_rgb
from edge.condition.zeff import EnergyCalibration, RCurve, ZeffLookup, load_energy_calibration

__all__ = [
    "T_FLOOR",
    "ConditionedImage",
    "Conditioner",
    "EnergyCalibration",
    "FlatField",
    "FlatFieldCorrector",
    "MissingChannelsError",
    "Modality",
    "RCurve",
    "ResizeGeometry",
    "ZeffLookup",
    "compose",
    "from_grey",
    "from_pseudo_colour",
    "geometry",
    "load_energy_calibration",
    "load_flatfield",
    "palette_rgb",
    "region_of",
]
