"""Exit-camera intrinsics and lens distortion from ChArUco views (``edge calibrate camera``).

Where it sits: commissioning, before ``calib.homography`` (which works in undistorted pixels and so depends on
the result). OpenCV 5 API: ``CharucoDetector.detectBoard`` → ``board.matchImagePoints`` → ``calibrateCamera``.
Views with too few corners are skipped with a reason rather than failing the run. This module computes; it
writes nothing (the CLI saves through ``edge.camera.calibration.save``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from calib.detect import BoardSpec, detect_charuco
from edge.camera.calibration import Accuracy, Intrinsics, now_iso
from edge.errors import CalibrationError


@dataclass(frozen=True, slots=True)
class ViewResult:
    """One view: its name, corners found, and its reprojection RMS (``None`` if skipped)."""

    name: str
    corners: int
    rms_px: float | None
    skipped: str | None = None


@dataclass(frozen=True, slots=True)
class IntrinsicsReport:
    intrinsics: Intrinsics
    views: tuple[ViewResult, ...]


def calibrate_intrinsics(
    views: Sequence[tuple[str, npt.NDArray[np.uint8]]],
    spec: BoardSpec,
    min_corners: int = 8,
    min_views: int = 3,
) -> IntrinsicsReport:
    """Intrinsics (k1, k2, p1, p2, k3 model) from named BGR/grey images of the board.

    Raises:
        CalibrationError: fewer than ``min_views`` usable views, or images of different sizes.
    """
    board = spec.board()
    objs: list[npt.NDArray[np.float32]] = []
    imgs: list[npt.NDArray[np.float32]] = []
    used: list[str] = []
    results: list[ViewResult] = []
    size: tuple[int, int] | None = None
    for name, image in views:
        h, w = image.shape[:2]
        if size is None:
            size = (w, h)
        elif size != (w, h):
            raise CalibrationError(f"{name}: image size {w}x{h} differs from the first view's {size[0]}x{size[1]}")
        found = detect_charuco(image, spec)
        if len(found) < min_corners:
            results.append(ViewResult(name, len(found), None, f"only {len(found)} corners (< {min_corners})"))
            continue
        obj, img = board.matchImagePoints(found.points_px.reshape(-1, 1, 2).astype(np.float32),
                                          found.ids.reshape(-1, 1))  # type: ignore[call-overload]
        objs.append(np.asarray(obj, np.float32))
        imgs.append(np.asarray(img, np.float32))
        used.append(name)
        results.append(ViewResult(name, len(found), None))
    if size is None or len(objs) < min_views:
        raise CalibrationError(f"need at least {min_views} views with >= {min_corners} ChArUco corners, got "
                               f"{len(objs)} of {len(results)}")
    rms, k, dist, rvecs, tvecs = cv2.calibrateCamera(objs, imgs, size, None, None)
    per_view: dict[str, float] = {}
    all_err: list[npt.NDArray[np.float64]] = []
    for name, o, i, r, t in zip(used, objs, imgs, rvecs, tvecs, strict=True):
        proj, _ = cv2.projectPoints(o, r, t, k, dist)
        e = np.linalg.norm(np.asarray(proj).reshape(-1, 2) - i.reshape(-1, 2), axis=1).astype(np.float64)
        per_view[name] = float(np.sqrt(np.mean(e**2)))
        all_err.append(e)
    errs = np.concatenate(all_err)
    final = tuple(ViewResult(v.name, v.corners, per_view.get(v.name), v.skipped) for v in results)
    intr = Intrinsics(
        image_size=size,
        camera_matrix=np.asarray(k, np.float64),
        dist_coeffs=np.asarray(dist, np.float64).ravel()[:5],
        accuracy=Accuracy(rms_px=float(rms), max_px=float(errs.max()), points=int(errs.size),
                          inliers=int(errs.size)),
        created=now_iso(),
        source=(*used, f"board {spec.squares_x}x{spec.squares_y} {spec.dictionary} square {spec.square:g} "
                       f"marker {spec.marker:g}"),
    )
    return IntrinsicsReport(intr, final)


def read_views(paths: Sequence[str]) -> list[tuple[str, npt.NDArray[np.uint8]]]:
    """Read images; an unreadable file is an error naming it (nothing is silently skipped here)."""
    out = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise CalibrationError(f"{p}: cannot read image (missing or not an image)")
        out.append((str(p), np.asarray(img, np.uint8)))
    return out
