"""The cross-modal calibration target on the virtual belt: where it lies and what the X-ray line sees of it.

The board itself (:class:`sim.board.TargetGeometry`) is the target commissioning builds; this module places it on
the belt and turns it into per-material path lengths for the physics, so the virtual scanner renders exactly
the target an engineer builds from ``edge calibrate target``.

This module must not do I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from sim.board import FloatArray, TargetGeometry, black_mask_cached


@dataclass(frozen=True, slots=True)
class TargetPlacement:
    """Where the target lies on the belt, in item coordinates of the X-ray scan.

    Attributes:
        centre_x_mm: board centre across the belt, from the channel-0 edge.
        centre_y_mm: board centre along the belt, from the item-start line.
        rotation_deg: rotation of the board's x axis from the belt's x axis (counter-clockwise in the image).
    """

    centre_x_mm: float
    centre_y_mm: float
    rotation_deg: float = 0.0

    def board_to_item(self, geometry: TargetGeometry) -> FloatArray:
        """2x3 affine: board mm → item mm."""
        a = np.deg2rad(self.rotation_deg)
        c, s = np.cos(a), np.sin(a)
        rot = np.array([[c, s], [-s, c]])  # image y points down, so CCW-in-image uses this sign
        centre_board = np.array([geometry.width_mm / 2, geometry.height_mm / 2])
        t = np.array([self.centre_x_mm, self.centre_y_mm]) - rot @ centre_board
        return np.hstack([rot, t[:, None]])

    def corners_item_mm(self, geometry: TargetGeometry) -> FloatArray:
        """(N, 2) chessboard corners in item mm (the known truth for the X-ray side)."""
        m = self.board_to_item(geometry)
        pts = geometry.corners_mm()
        return np.asarray(pts @ m[:, :2].T + m[:, 2], dtype=np.float64)


def target_path_maps(
    geometry: TargetGeometry,
    placement: TargetPlacement,
    lines: int,
    channels: int = 640,
    pitch_mm: float = 0.8,
    supersample: int = 4,
) -> dict[str, npt.NDArray[np.float32]]:
    """X-ray path lengths of the target for the physics: material name → (lines, channels) float32 mm.

    Partial-volume effects are modelled by area-averaging a ``supersample``² grid per detector pixel, so edges
    are soft the way a real detector's are. Materials: ``steel`` (pattern), the substrate, ``paper`` (print).
    """
    if lines < 1 or channels < 1:
        raise ValueError(f"need a positive image size, got {lines}x{channels}")
    px_per_mm = 8.0
    mask = black_mask_cached(geometry, px_per_mm).astype(np.float32) / 255.0
    full = np.ones_like(mask)
    board_to_item = placement.board_to_item(geometry)
    # board mask px → board mm → item mm → supersampled detector px
    fine = supersample / pitch_mm
    a_px = np.array([[1 / px_per_mm, 0, 0.5 / px_per_mm], [0, 1 / px_per_mm, 0.5 / px_per_mm], [0, 0, 1]])
    a_item = np.vstack([board_to_item, [0, 0, 1]])
    a_fine = np.array([[fine, 0, -0.5], [0, fine, -0.5], [0, 0, 1]])
    m = (a_fine @ a_item @ a_px)[:2]
    size = (channels * supersample, lines * supersample)
    out: dict[str, npt.NDArray[np.float32]] = {}
    for name, layer, thick in (("steel", mask, geometry.steel_mm), (geometry.substrate_material, full,
                                                                      geometry.substrate_mm),
                               ("paper", full, geometry.paper_mm)):
        warped = cv2.warpAffine(layer, m, size, flags=cv2.INTER_LINEAR, borderValue=0.0)
        frac = cv2.resize(warped, (channels, lines), interpolation=cv2.INTER_AREA)
        out[name] = (np.clip(frac, 0, 1) * thick).astype(np.float32)
    return out


def merge_path_maps(*maps: Mapping[str, npt.NDArray[np.float32]]) -> dict[str, npt.NDArray[np.float32]]:
    """Sum path-length maps of several objects material by material (shapes must agree)."""
    out: dict[str, npt.NDArray[np.float32]] = {}
    for m in maps:
        for k, v in m.items():
            out[k] = (out[k] + v).astype(np.float32) if k in out else v.astype(np.float32)
    return out
