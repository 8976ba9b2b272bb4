"""The exit-camera calibration file: intrinsics, lens distortion and the X-ray → camera homography.

Where it sits: written by ``calib/`` (commissioning), read by ``edge/camera/mapping.py`` at runtime. One YAML file
holds everything, with the accuracy each part was measured at, when, and from what. Saves are atomic (temporary
file in the same directory, fsync, ``os.replace``) and the previous version is kept in ``history/`` beside it, so
a bad calibration can always be rolled back by copying a file.

The homography ``matrix`` maps X-ray pixels ``(column, row, 1)`` of an item scanned with its item-start line at
``reference_travel_mm`` past the X-ray line to *undistorted* camera pixels (the camera matrix's frame). For an
item whose start line has travelled ``d`` mm, rows shift by ``-(d - reference_travel_mm) / pitch_mm`` first.

This module must not touch cameras or compute calibrations.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from edge.errors import CalibrationError
from edge.files import atomic_write_bytes

SCHEMA = "xray-edge/camera-calibration/1"
FloatArray = npt.NDArray[np.float64]


def _ro(a: Any, shape: tuple[int, ...], name: str) -> FloatArray:
    arr = np.array(a, dtype=np.float64)
    if arr.shape != shape:
        raise CalibrationError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{name} holds non-finite values")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, slots=True)
class Accuracy:
    """How well a calibration fitted its data, in camera pixels and belt millimetres."""

    rms_px: float
    max_px: float
    rms_mm: float | None = None
    max_mm: float | None = None
    points: int = 0
    inliers: int = 0


@dataclass(frozen=True, slots=True)
class Intrinsics:
    """Pinhole intrinsics and OpenCV distortion.

    Attributes:
        image_size: (width, height) px the calibration holds for.
        camera_matrix: (3, 3).
        dist_coeffs: (5,) k1, k2, p1, p2, k3.
        accuracy: reprojection error of the views.
        created: ISO 8601 UTC time of the calibration.
        source: what it was computed from (file names, board).
    """

    image_size: tuple[int, int]
    camera_matrix: FloatArray
    dist_coeffs: FloatArray
    accuracy: Accuracy
    created: str
    source: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "camera_matrix", _ro(self.camera_matrix, (3, 3), "camera_matrix"))
        object.__setattr__(self, "dist_coeffs", _ro(np.ravel(self.dist_coeffs)[:5], (5,), "dist_coeffs"))


@dataclass(frozen=True, slots=True)
class Homography:
    """X-ray → undistorted camera mapping on the calibration plane (see module docstring).

    Attributes:
        matrix: (3, 3), normalised so ``matrix[2, 2] == 1``.
        reference_travel_mm: item-start travel the matrix is stated for.
        pitch_mm: X-ray pixel pitch (channel pitch = belt travel per line).
        plane_height_mm: height above the belt of the plane the matrix holds for (the target's top).
        rotation: (3, 3) belt frame → camera rotation decomposed from the matrix and the intrinsics.
        translation_mm: (3,) belt-frame origin in camera coordinates (with ``rotation``: the camera pose).
        accuracy: residuals of the fit, px and mm.
        created, source: when and from what.
    """

    matrix: FloatArray
    reference_travel_mm: float
    pitch_mm: float
    plane_height_mm: float
    rotation: FloatArray
    translation_mm: FloatArray
    accuracy: Accuracy
    created: str
    source: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        m = _ro(self.matrix, (3, 3), "homography.matrix")
        if abs(m[2, 2]) < 1e-12 or abs(np.linalg.det(m)) < 1e-12:
            raise CalibrationError("homography.matrix is singular")
        m = m / m[2, 2]
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "rotation", _ro(self.rotation, (3, 3), "homography.rotation"))
        object.__setattr__(self, "translation_mm", _ro(self.translation_mm, (3,), "homography.translation_mm"))
        if self.pitch_mm <= 0:
            raise CalibrationError(f"homography.pitch_mm must be > 0, got {self.pitch_mm}")


@dataclass(frozen=True, slots=True)
class CameraCalibration:
    """Everything the runtime needs to map X-ray results onto exit-camera frames."""

    intrinsics: Intrinsics
    homography: Homography | None = None
    target: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.homography is not None


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _acc_to_dict(a: Accuracy) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, float) else v) for k, v in asdict(a).items()}


def to_dict(cal: CameraCalibration) -> dict[str, Any]:
    i = cal.intrinsics
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "intrinsics": {
            "image_size": [int(i.image_size[0]), int(i.image_size[1])],
            "camera_matrix": i.camera_matrix.tolist(),
            "dist_coeffs": i.dist_coeffs.tolist(),
            "accuracy": _acc_to_dict(i.accuracy),
            "created": i.created,
            "source": list(i.source),
        },
        "target": dict(cal.target),
    }
    if cal.homography is not None:
        h = cal.homography
        out["homography"] = {
            "matrix": h.matrix.tolist(),
            "reference_travel_mm": float(h.reference_travel_mm),
            "pitch_mm": float(h.pitch_mm),
            "plane_height_mm": float(h.plane_height_mm),
            "rotation": h.rotation.tolist(),
            "translation_mm": h.translation_mm.tolist(),
            "accuracy": _acc_to_dict(h.accuracy),
            "created": h.created,
            "source": list(h.source),
        }
    return out


def from_dict(data: Any, where: str = "<calibration>") -> CameraCalibration:
    """Build from parsed YAML; every problem is a ``CalibrationError`` naming the file and key."""
    if not isinstance(data, dict):
        raise CalibrationError(f"{where}: expected a mapping at the top level")
    if data.get("schema") != SCHEMA:
        raise CalibrationError(f"{where}: schema {data.get('schema')!r} is not {SCHEMA!r}")
    try:
        i = data["intrinsics"]
        intr = Intrinsics(
            image_size=(int(i["image_size"][0]), int(i["image_size"][1])),
            camera_matrix=np.asarray(i["camera_matrix"], dtype=np.float64),
            dist_coeffs=np.asarray(i["dist_coeffs"], dtype=np.float64),
            accuracy=Accuracy(**i["accuracy"]),
            created=str(i["created"]),
            source=tuple(i.get("source", ())),
        )
        hom = None
        if data.get("homography") is not None:
            h = data["homography"]
            hom = Homography(
                matrix=np.asarray(h["matrix"], dtype=np.float64),
                reference_travel_mm=float(h["reference_travel_mm"]),
                pitch_mm=float(h["pitch_mm"]),
                plane_height_mm=float(h["plane_height_mm"]),
                rotation=np.asarray(h["rotation"], dtype=np.float64),
                translation_mm=np.asarray(h["translation_mm"], dtype=np.float64),
                accuracy=Accuracy(**h["accuracy"]),
                created=str(h["created"]),
                source=tuple(h.get("source", ())),
            )
    except CalibrationError as exc:
        raise CalibrationError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CalibrationError(f"{where}: missing or malformed key: {exc}") from None
    return CameraCalibration(intrinsics=intr, homography=hom, target=dict(data.get("target") or {}))


def load(path: Path) -> CameraCalibration:
    """Read a calibration file. Raises ``CalibrationError`` with the path when it is missing or invalid."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read camera calibration: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CalibrationError(f"{path}: not valid YAML: {exc}") from None
    return from_dict(data, str(path))


def save(cal: CameraCalibration, path: Path) -> Path | None:
    """Write atomically; the file it replaces goes to ``history/``. Returns the history copy, if any."""
    text = "# exit-camera calibration, written by `edge calibrate`; do not edit by hand\n"
    text += yaml.safe_dump(to_dict(cal), sort_keys=False, default_flow_style=None, width=120)
    return atomic_write_bytes(Path(path), text.encode("utf-8"), keep_history=True)
