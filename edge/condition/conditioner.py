"""Raw dual-energy counts in, :class:`ConditionedImage` out: flat-field, logs, effective Z, pseudo-colour.

Where it sits: the condition stage's work. Built once at start-up from the flat-field and energy
calibrations and the palette (``from_config`` loads them from the paths in ``ConditionConfig``); then
:meth:`Conditioner.condition` runs per item. Effective Z and pseudo-colour share one pair of remap coordinates
over the (a, R) grid of ``edge.condition.zeff``; the colour table is the palette evaluated on that grid, so a
pixel's colour costs one nearest-node fetch rather than per-pixel palette arithmetic.

Must not: know about models or contracts (that is ``edge.condition.composer``), or keep state between items.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.condition.flatfield import FlatField, FlatFieldCorrector, load_flatfield
from edge.condition.image import ConditionedImage, Modality
from edge.condition.palette import palette_rgb
from edge.condition.zeff import EnergyCalibration, ZeffLookup, load_energy_calibration, log_transmission
from edge.config.condition import ConditionConfig, PaletteConfig
from edge.errors import FrameError

F32 = NDArray[np.float32]

STRIP_LINES = 8192
"""Belt lines conditioned at once (Z_eff and colour lookups): bounds the temporaries of a long item."""


class Conditioner:
    """Conditions dual-energy items with one scanner's calibrations."""

    def __init__(self, flatfield: FlatField, energy: EnergyCalibration, palette: PaletteConfig) -> None:
        self.corrector = FlatFieldCorrector(flatfield)
        self.lookup = ZeffLookup(energy)
        self.palette = palette
        a = self.lookup.a_nodes[None, :]
        self.colour_table: NDArray[np.uint8] = np.ascontiguousarray(
            palette_rgb(self.lookup.z_grid, np.exp(-a), palette)
        )
        self.colour_table.flags.writeable = False

    @classmethod
    def from_config(cls, cfg: ConditionConfig) -> Conditioner:
        """Load both calibrations named in the config (raises ``CalibrationError`` if either is unusable)."""
        return cls(load_flatfield(cfg.flatfield_file), load_energy_calibration(cfg.energy_file), cfg.palette)

    def condition(self, low: NDArray[np.uint16], high: NDArray[np.uint16]) -> ConditionedImage:
        """Condition one item's raw ``(H, W) uint16`` low- and high-energy counts.

        Raises:
            FrameError: shapes differ, are not 2-D, or do not match the flat-field's channels.
        """
        if low.shape != high.shape or low.ndim != 2:
            raise FrameError(f"low/high raw frames must be equal (H, W), got {low.shape} and {high.shape}")
        t_low = self.corrector.apply(low, 0)
        t_high = self.corrector.apply(high, 1)
        return self.from_transmission(t_low, t_high)

    def from_transmission(self, t_low: F32, t_high: F32) -> ConditionedImage:
        """Condition already flat-fielded transmissions (``(H, W) float32`` in ``[T_FLOOR, 1]``); takes ownership."""
        if t_low.shape != t_high.shape or t_low.ndim != 2:
            raise FrameError(f"t_low/t_high must be equal (H, W), got {t_low.shape} and {t_high.shape}")
        if t_low.dtype != np.float32 or t_high.dtype != np.float32:
            raise FrameError(f"transmissions must be float32, got {t_low.dtype}/{t_high.dtype}")
        height, width = t_high.shape
        if height <= STRIP_LINES:  # the usual item: one strip, the lookups' outputs are the planes (no copy)
            zeff, pc = self._lookups(t_low, t_high)
        else:
            # In strips of belt lines: the logs and remap coordinates (16 bytes a pixel) then exist for one strip
            # only, not for the whole item (a 60,000-line item would hold 600 MB of them), and OpenCV's remap,
            # which refuses images of 32,767 rows or more, always sees fewer.
            zeff = np.empty((height, width), np.float32)
            pc = np.empty((height, width, 3), np.uint8)
            for top in range(0, height, STRIP_LINES):
                rows = slice(top, min(height, top + STRIP_LINES))
                zeff[rows], pc[rows] = self._lookups(t_low[rows], t_high[rows])
        return ConditionedImage(Modality.DUAL_ENERGY, t_high=t_high, t_low=t_low, zeff=zeff, pc=pc)

    def _lookups(self, t_low: F32, t_high: F32) -> tuple[F32, NDArray[np.uint8]]:
        """Effective Z ``(h, W) float32`` and pseudo-colour ``(h, W, 3) uint8`` of (a strip of) transmissions."""
        map_x, map_y = self.lookup.maps(log_transmission(t_low), log_transmission(t_high))
        zeff = self.lookup.remap(self.lookup.z_grid, map_x, map_y)
        # Nearest node for colour: the grid is far finer than any visible hue step, and 3-channel 8-bit
        # bilinear remap is several times slower than nearest in OpenCV.
        pc = cv2.remap(self.colour_table, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        return np.asarray(zeff, dtype=np.float32), np.asarray(pc, dtype=np.uint8)

