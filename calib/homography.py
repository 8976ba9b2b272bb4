"""X-ray → exit-camera homography from the target passing through (``edge calibrate homography`` / ``check``).

Where it sits: commissioning, after ``calib.camera``. Input is a *capture set* directory::

    capture.yaml      pitch_mm: 0.8
                      xray: {high: xray_high.png, low: xray_low.png, dark: dark_high.png, air: air_high.png}
                      frames: [{file: camera_000.png, travel_mm: 812.4}, ...]
    xray_high.png     16-bit raw high-energy scan of the target item (rows = lines, columns = channels)
    camera_*.png/jpg  exit-camera frames of the same pass; travel_mm = item-start travel at that frame (encoder)

``dark``/``air`` are optional flat-field references. ChArUco corners are found in both modalities and paired by
id; every frame's X-ray rows are shifted to one reference travel so several frames (different belt positions)
constrain one matrix. The estimate is robust (``cv2.USAC_MAGSAC``) and then refined by least squares on the
inliers; residuals are reported per point in distorted camera px and in belt mm. Saving is refused above the
accuracy thresholds. This module never writes outside the paths it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import yaml

from calib.detect import BoardSpec, Corners, detect_charuco, detect_charuco_xray, xray_view
from edge.camera.calibration import Accuracy, CameraCalibration, Homography, Intrinsics, now_iso
from edge.camera.mapping import CameraMapper, decompose_pose, undistort_points
from edge.errors import CalibrationError

FloatArray = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class CaptureFrame:
    name: str
    image: U8
    travel_mm: float


@dataclass(frozen=True, slots=True)
class CaptureSet:
    """A pass of the target: the X-ray view (8-bit, dark = attenuating) and stamped camera frames."""

    xray: U8
    frames: tuple[CaptureFrame, ...]
    pitch_mm: float
    source: str


@dataclass(frozen=True, slots=True)
class Residual:
    """One corner seen in both modalities: where the mapping puts it and where the camera saw it."""

    corner_id: int
    frame: str
    xray_px: tuple[float, float]
    camera_px: tuple[float, float]
    mapped_px: tuple[float, float]
    error_px: float
    error_mm: float
    inlier: bool


@dataclass(frozen=True, slots=True)
class HomographyReport:
    homography: Homography
    residuals: tuple[Residual, ...]
    xray_corners: int
    frames_used: tuple[str, ...]


class CalibrationRefused(CalibrationError):
    """The result is worse than the thresholds; nothing was saved."""


def load_capture_set(directory: Path) -> CaptureSet:
    d = Path(directory)
    meta_path = d / "capture.yaml"
    try:
        meta: Any = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CalibrationError(f"{meta_path}: cannot read capture set: {exc.strerror}") from None
    if not isinstance(meta, dict) or "xray" not in meta or "frames" not in meta:
        raise CalibrationError(f"{meta_path}: expected keys pitch_mm, xray, frames")

    def img(name: str, flags: int) -> npt.NDArray[Any]:
        arr = cv2.imread(str(d / name), flags)
        if arr is None:
            raise CalibrationError(f"{d / name}: cannot read image")
        return np.asarray(arr)

    x = meta["xray"]
    high = img(x["high"], cv2.IMREAD_UNCHANGED)
    if high.ndim == 3:
        high = cv2.cvtColor(high, cv2.COLOR_BGR2GRAY)
    dark = np.median(img(x["dark"], cv2.IMREAD_UNCHANGED).astype(np.float64), axis=0) if x.get("dark") else None
    air = np.median(img(x["air"], cv2.IMREAD_UNCHANGED).astype(np.float64), axis=0) if x.get("air") else None
    frames = []
    for f in meta["frames"]:
        try:
            frames.append(CaptureFrame(str(f["file"]), np.asarray(img(str(f["file"]), cv2.IMREAD_COLOR), np.uint8),
                                       float(f["travel_mm"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{meta_path}: frame entry {f!r} needs file and travel_mm ({exc})") from None
    if not frames:
        raise CalibrationError(f"{meta_path}: no camera frames listed")
    pitch = float(meta.get("pitch_mm", 0.8))
    return CaptureSet(xray_view(high, dark, air), tuple(frames), pitch, str(d))


def _pairs(xr: Corners, cam: Corners) -> tuple[npt.NDArray[np.int32], FloatArray, FloatArray]:
    lookup = {int(i): k for k, i in enumerate(xr.ids)}
    keep = [(int(i), lookup[int(i)], k) for k, i in enumerate(cam.ids) if int(i) in lookup]
    ids = np.array([a for a, _, _ in keep], np.int32)
    xp = np.array([xr.points_px[b] for _, b, _ in keep], np.float64).reshape(-1, 2)
    cp = np.array([cam.points_px[c] for _, _, c in keep], np.float64).reshape(-1, 2)
    return ids, xp, cp


@dataclass(frozen=True, slots=True)
class _Matches:
    ids: npt.NDArray[np.int32]
    frame: tuple[str, ...]
    travel: FloatArray
    xray: FloatArray
    camera: FloatArray
    xray_corners: int


def match_corners(capture: CaptureSet, spec: BoardSpec, min_per_frame: int = 4) -> _Matches:
    xr = detect_charuco_xray(capture.xray, spec)
    if len(xr) < 4:
        raise CalibrationError(f"{capture.source}: target not found in the X-ray scan ({len(xr)} corners)")
    ids, names, travels, xs, cs = [], [], [], [], []
    for f in capture.frames:
        cam = detect_charuco(f.image, spec)
        i, x, c = _pairs(xr, cam)
        if len(i) < min_per_frame:
            continue
        ids.append(i)
        xs.append(x)
        cs.append(c)
        names += [f.name] * len(i)
        travels.append(np.full(len(i), f.travel_mm))
    if not ids:
        raise CalibrationError(f"{capture.source}: the target was not found in any camera frame")
    return _Matches(np.concatenate(ids), tuple(names), np.concatenate(travels), np.vstack(xs), np.vstack(cs),
                    len(xr))


def residuals(mapper: CameraMapper, m: _Matches, inliers: npt.NDArray[np.bool_] | None = None) -> tuple[Residual, ...]:
    """Per-point errors of a mapping: camera px (distorted image) and belt mm (back-projected on the plane)."""
    out = []
    for k in range(len(m.ids)):
        t = float(m.travel[k])
        mapped = mapper.xray_to_camera(m.xray[k:k + 1], t)[0]
        back = mapper.camera_to_xray(m.camera[k:k + 1], t)[0]
        out.append(Residual(
            int(m.ids[k]), m.frame[k], (float(m.xray[k, 0]), float(m.xray[k, 1])),
            (float(m.camera[k, 0]), float(m.camera[k, 1])), (float(mapped[0]), float(mapped[1])),
            float(np.linalg.norm(mapped - m.camera[k])), float(np.linalg.norm(back - m.xray[k]) * mapper.pitch_mm),
            True if inliers is None else bool(inliers[k])))
    return tuple(out)


def accuracy_of(res: tuple[Residual, ...]) -> Accuracy:
    r = [x for x in res if x.inlier]
    px = np.array([x.error_px for x in r])
    mm = np.array([x.error_mm for x in r])
    if px.size == 0:
        return Accuracy(float("inf"), float("inf"), None, None, len(res), 0)
    return Accuracy(float(np.sqrt(np.mean(px**2))), float(px.max()), float(np.sqrt(np.mean(mm**2))),
                    float(mm.max()), len(res), len(r))


def estimate_homography(
    capture: CaptureSet,
    intrinsics: Intrinsics,
    spec: BoardSpec,
    plane_height_mm: float,
    ransac_px: float = 3.0,
) -> HomographyReport:
    """Robust + refined homography; ``plane_height_mm`` is the target's top-surface height above the belt."""
    m = match_corners(capture, spec)
    if len(m.ids) < 8:
        raise CalibrationError(f"only {len(m.ids)} corners matched between X-ray and camera; need >= 8")
    k = np.asarray(intrinsics.camera_matrix)
    dist = np.asarray(intrinsics.dist_coeffs)
    ref = float(np.median(m.travel))
    src = m.xray.copy()
    src[:, 1] -= (m.travel - ref) / capture.pitch_mm
    dst = undistort_points(m.camera, k, dist)
    h, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, ransac_px)
    if h is None or mask is None:
        raise CalibrationError("homography estimation failed (degenerate correspondences?)")
    inl = np.asarray(mask).ravel().astype(bool)
    if inl.sum() < 8:
        raise CalibrationError(f"only {int(inl.sum())} inliers after MAGSAC; need >= 8")
    # refine: least squares on the inliers, then once more after dropping points beyond 3 robust sigmas
    for _ in range(2):
        h_ls, _ = cv2.findHomography(src[inl], dst[inl], 0)
        if h_ls is not None:
            h = h_ls
        proj = cv2.perspectiveTransform(src.reshape(-1, 1, 2), h).reshape(-1, 2)
        e = np.linalg.norm(proj - dst, axis=1)
        sigma = 1.4826 * float(np.median(e[inl])) + 1e-6
        inl = inl & (e <= max(3.0 * sigma, 0.5))
    r, t = decompose_pose(np.asarray(h, np.float64), k, capture.pitch_mm, ref, plane_height_mm)
    provisional = Homography(np.asarray(h, np.float64), ref, capture.pitch_mm, plane_height_mm, r, t,
                             Accuracy(0.0, 0.0), now_iso(), (capture.source,))
    mapper = CameraMapper(CameraCalibration(intrinsics, provisional))
    res = residuals(mapper, m, inl)
    acc = accuracy_of(res)
    frames = tuple(dict.fromkeys(m.frame))
    hom = Homography(provisional.matrix, ref, capture.pitch_mm, plane_height_mm, r, t, acc, provisional.created,
                     (capture.source, *frames))
    return HomographyReport(hom, res, m.xray_corners, frames)


def check_thresholds(acc: Accuracy, max_rms_px: float, max_error_px: float, min_points: int = 12) -> list[str]:
    """Reasons to refuse a result (empty = good enough)."""
    why = []
    if acc.inliers < min_points:
        why.append(f"only {acc.inliers} inlier points (need >= {min_points})")
    if acc.rms_px > max_rms_px:
        why.append(f"RMS error {acc.rms_px:.2f} px exceeds {max_rms_px:.2f} px")
    if acc.max_px > max_error_px:
        why.append(f"max error {acc.max_px:.2f} px exceeds {max_error_px:.2f} px")
    return why


def overlay_picture(capture: CaptureSet, mapper: CameraMapper, res: tuple[Residual, ...],
                    gain: float = 20.0) -> U8:
    """The middle frame with the X-ray scan warped onto it (magenta) and every corner's residual.

    Green circles: corners the camera saw; red crosses: where the X-ray corners map; yellow lines: residual
    vectors magnified ``gain`` times. If the calibration is right, the magenta steel pattern lies exactly on
    the printed pattern and the yellow lines are short.
    """
    frame = capture.frames[len(capture.frames) // 2]
    img = frame.image.copy()
    h, w = img.shape[:2]
    xs, ys = np.meshgrid(np.arange(0, w, 2, dtype=np.float64), np.arange(0, h, 2, dtype=np.float64))
    xr = mapper.camera_to_xray(np.stack([xs.ravel(), ys.ravel()], axis=1), frame.travel_mm)
    mx = xr[:, 0].reshape(xs.shape).astype(np.float32)
    my = xr[:, 1].reshape(xs.shape).astype(np.float32)
    warped = cv2.remap(capture.xray, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    warped = cv2.resize(warped, (w, h), interpolation=cv2.INTER_LINEAR)
    dark = (255 - warped.astype(np.float32)) / 255.0
    tint = img.astype(np.float32)
    tint[..., 0] = tint[..., 0] * (1 - 0.6 * dark) + 255 * 0.6 * dark
    tint[..., 2] = tint[..., 2] * (1 - 0.6 * dark) + 255 * 0.6 * dark
    tint[..., 1] = tint[..., 1] * (1 - 0.6 * dark)
    out = np.clip(tint, 0, 255).astype(np.uint8)
    for r in res:
        if r.frame != frame.name:
            continue
        c = (round(r.camera_px[0]), round(r.camera_px[1]))
        mp = np.array(r.mapped_px)
        end = np.array(r.camera_px) + gain * (mp - np.array(r.camera_px))
        cv2.circle(out, c, 6, (0, 220, 0), 2, cv2.LINE_AA)
        cv2.drawMarker(out, (round(mp[0]), round(mp[1])), (0, 0, 255), cv2.MARKER_CROSS, 10, 2)
        cv2.line(out, c, (round(end[0]), round(end[1])), (0, 230, 255), 2, cv2.LINE_AA)
    acc = accuracy_of(res)
    text = (f"RMS {acc.rms_px:.2f} px / {acc.rms_mm or 0:.2f} mm, max {acc.max_px:.2f} px, "
            f"{acc.inliers}/{acc.points} points; residuals x{gain:g}")
    cv2.putText(out, text, (12, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 5, cv2.LINE_AA)
    cv2.putText(out, text, (12, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
    return out


@dataclass(frozen=True, slots=True)
class CheckReport:
    """``calibrate check``: the stored mapping re-measured, and how far a fresh estimate has moved."""

    stored: Accuracy
    measured: Accuracy
    drift_px: float
    drift_mm: float
    passed: bool
    reasons: tuple[str, ...]


def check_calibration(
    cal: CameraCalibration,
    capture: CaptureSet,
    spec: BoardSpec,
    max_rms_px: float = 2.0,
    max_drift_px: float = 3.0,
) -> CheckReport:
    """Measure the stored mapping on a new pass; drift = largest move of the mapped target corners."""
    if cal.homography is None:
        raise CalibrationError("calibration has no homography to check; run `edge calibrate homography`")
    mapper = CameraMapper(cal)
    m = match_corners(capture, spec)
    measured = accuracy_of(residuals(mapper, m))
    fresh = estimate_homography(capture, cal.intrinsics, spec, cal.homography.plane_height_mm)
    new_mapper = CameraMapper(CameraCalibration(cal.intrinsics, fresh.homography))
    # compare both mappings over the area the target covered in X-ray, at the pass's median travel
    lo, hi = m.xray.min(axis=0), m.xray.max(axis=0)
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 9), np.linspace(lo[1], hi[1], 7))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    t = float(np.median(m.travel))
    a = mapper.xray_to_camera(grid, t)
    b = new_mapper.xray_to_camera(grid, t)
    drift_px = float(np.linalg.norm(a - b, axis=1).max())
    back = mapper.camera_to_xray(b, t)
    drift_mm = float(np.linalg.norm(back - grid, axis=1).max() * mapper.pitch_mm)
    reasons = []
    if measured.rms_px > max_rms_px:
        reasons.append(f"stored mapping is off by {measured.rms_px:.2f} px RMS (limit {max_rms_px:.2f})")
    if drift_px > max_drift_px:
        reasons.append(f"mapping drifted {drift_px:.2f} px (limit {max_drift_px:.2f}); recalibrate")
    return CheckReport(cal.homography.accuracy, measured, drift_px, drift_mm, not reasons, tuple(reasons))
