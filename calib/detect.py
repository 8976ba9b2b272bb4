"""Find ChArUco corners in camera photos and in X-ray scans of the cross-modal target.

Where it sits: ``calib/`` (commissioning), used by ``calib.camera``, ``calib.homography`` and ``calib.check``.
In X-ray the steel layer shows as dark cells on a light board, exactly like the print does to the camera, so
the same OpenCV ``CharucoDetector`` serves both once the 16-bit scan is turned into an 8-bit picture
(flat-field or per-channel normalisation, contrast stretch) and upscaled so marker cells are large enough for
the ArUco decoder. It must not estimate calibrations or write files.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class BoardSpec:
    """A ChArUco board as OpenCV needs it (mm or any unit; object points come out in the same unit)."""

    squares_x: int
    squares_y: int
    square: float
    marker: float
    dictionary: str
    legacy: bool = False

    def board(self) -> cv2.aruco.CharucoBoard:
        if not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(f"unknown ArUco dictionary {self.dictionary!r}")
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        b = cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square, self.marker, d)
        b.setLegacyPattern(self.legacy)
        return b

    def corners(self) -> FloatArray:
        return np.asarray(self.board().getChessboardCorners(), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Corners:
    """Detected ChArUco corners: ``ids`` (N,) int and ``points_px`` (N, 2) image px (OpenCV centre convention)."""

    ids: npt.NDArray[np.int32]
    points_px: FloatArray

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def _detector(board: cv2.aruco.CharucoBoard) -> cv2.aruco.CharucoDetector:
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    cparams = cv2.aruco.CharucoParameters()
    cparams.tryRefineMarkers = True
    return cv2.aruco.CharucoDetector(board, cparams, params)


def detect_charuco(image: npt.NDArray[np.generic], spec: BoardSpec) -> Corners:
    """ChArUco corners in an 8-bit grey or BGR image; an empty result when the board is not found."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.dtype != np.uint8:
        raise ValueError(f"detect_charuco needs an 8-bit image, got {img.dtype}; use xray_view() for scans")
    cc, ci, _, _ = _detector(spec.board()).detectBoard(img)
    if ci is None or cc is None or len(ci) == 0:
        return Corners(np.zeros(0, np.int32), np.zeros((0, 2)))
    return Corners(np.asarray(ci, dtype=np.int32).ravel(), np.asarray(cc, dtype=np.float64).reshape(-1, 2))


def xray_view(
    raw: npt.NDArray[np.uint16] | npt.NDArray[np.floating],
    dark: npt.NDArray[np.floating] | None = None,
    air: npt.NDArray[np.floating] | None = None,
) -> U8:
    """An 8-bit picture of a raw X-ray channel in which attenuating things are dark (like print on paper).

    With ``dark``/``air`` (per-channel (W,) or (H, W) references) the transmission is the flat-field
    ``(I - dark) / (air - dark)``. Without them each channel is divided by its own bright level (99th
    percentile down the column), which removes the detector's per-channel gain stripes well enough for corner
    finding.
    """
    img = np.asarray(raw, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"raw X-ray image must be 2-D (lines, channels), got shape {img.shape}")
    if dark is not None and air is not None:
        t = (img - np.asarray(dark, np.float64)) / np.maximum(np.asarray(air, np.float64) - np.asarray(dark), 1e-6)
    else:
        bright = np.percentile(img, 99.0, axis=0)
        t = img / np.maximum(bright, 1e-6)[None, :]
    lo, hi = np.percentile(t, [0.5, 99.5])
    out = np.clip((t - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    return (out * 255.0 + 0.5).astype(np.uint8)


def detect_charuco_xray(view: U8, spec: BoardSpec, upscale: int = 3) -> Corners:
    """ChArUco corners in an X-ray view, in X-ray px (column, row). Upscaled first: cells are ~8 px wide."""
    big = cv2.resize(view, (view.shape[1] * upscale, view.shape[0] * upscale), interpolation=cv2.INTER_CUBIC)
    found = detect_charuco(big, spec)
    if len(found) == 0:
        return found
    # pixel-centre convention: u_big = (u + 0.5) * s - 0.5
    pts = (found.points_px + 0.5) / upscale - 0.5
    return Corners(found.ids, pts)
