"""Commissioning rehearsal on the virtual scanner: the camera's ChArUco views and the cross-modal target pass.

Why: ``edge calibrate camera|homography|check`` read photos and a capture set that on site come from the exit
camera and the scanner. Here the virtual exit camera (``sim.camera``) and the virtual scanner (``sim.physics``)
make the same files, so the whole commissioning can be rehearsed, documented and tested without a lane, and the
demo's camera calibration comes out of exactly the code an engineer runs (``commission_camera``).

The camera is described by a ``RehearsalCamera`` (lens and mounting of ``sim.camera.CameraSpec``, scaled to a
resolution, and a seed); every command of one rehearsal must be given the same description, as on site the
views and the passes come from one camera. ``bump_deg`` turns the camera after calibration (someone knocked
it): a pass made with it is what ``edge calibrate check`` must refuse.

Must not: be imported by ``edge/`` (it needs the virtual scanner).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2

from calib.camera import IntrinsicsReport, calibrate_intrinsics
from calib.detect import xray_view
from calib.homography import CaptureFrame, CaptureSet, HomographyReport, check_thresholds, estimate_homography
from calib.target import board_spec
from edge.camera import calibration as calfile
from edge.errors import CalibrationError
from sim.board import TargetGeometry
from sim.camera import CameraSpec, ExitCamera, simulate_intrinsics_views, simulate_target_pass, write_capture_set
from sim.physics import DualEnergyScanner
from sim.target import TargetPlacement

PITCH_MM = 0.8
"""The virtual scanner's channel pitch = belt travel per line."""


@dataclass(frozen=True, slots=True)
class RehearsalCamera:
    """The virtual exit camera of a rehearsal.

    Attributes:
        scale: image size relative to the 1280 x 720 reference camera (intrinsics scale with it).
        downstream_mm: optical centre downstream of the X-ray line.
        seed: sensor noise and belt texture.
        bump_deg: added to the camera's yaw and tilt (a knocked camera; 0 = as calibrated).
        fps: frame rate of its video.
    """

    scale: float = 1.0
    downstream_mm: float = 750.0
    seed: int = 3
    bump_deg: float = 0.0
    fps: float = 10.0

    def __post_init__(self) -> None:
        if not 0.25 <= self.scale <= 2.0:
            raise ValueError(f"scale must be in [0.25, 2], got {self.scale}")
        if not 300.0 <= self.downstream_mm <= 5000.0:
            raise ValueError(f"downstream_mm must be in [300, 5000], got {self.downstream_mm}")

    def spec(self) -> CameraSpec:
        base = CameraSpec()
        s = self.scale
        return replace(base, width_px=round(base.width_px * s), height_px=round(base.height_px * s),
                       fx=base.fx * s, fy=base.fy * s, cx=(base.cx + 0.5) * s - 0.5, cy=(base.cy + 0.5) * s - 0.5,
                       downstream_mm=self.downstream_mm, fps=self.fps, yaw_deg=base.yaw_deg + self.bump_deg,
                       tilt_deg=base.tilt_deg + self.bump_deg)

    def camera(self) -> ExitCamera:
        return ExitCamera(self.spec(), pitch_mm=PITCH_MM, seed=self.seed)


def write_views(out: Path, camera: RehearsalCamera, geometry: TargetGeometry, n: int = 12,
                seed: int = 0) -> list[Path]:
    """The board held in ``n`` poses in front of the camera, one PNG each (``view_NN.png``)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(simulate_intrinsics_views(camera.camera(), geometry, n=n, seed=seed)):
        path = out / f"view_{i:02d}.png"
        if not cv2.imwrite(str(path), img):
            raise OSError(f"{path}: cannot write")
        paths.append(path)
    return paths


def make_pass(camera: RehearsalCamera, geometry: TargetGeometry, placement: TargetPlacement,
              scanner_seed: int = 11, seed: int = 1, offsets_mm: Sequence[float] = (-120.0, 0.0, 120.0)) -> CaptureSet:
    """The target scanned by the virtual scanner and filmed by the virtual camera, as a capture set in memory."""
    tp = simulate_target_pass(camera.camera(), DualEnergyScanner(seed=scanner_seed), geometry, placement,
                              tuple(offsets_mm), seed=seed)
    frames = tuple(CaptureFrame(f"camera_{k:03d}.png", f, t)
                   for k, (f, t) in enumerate(zip(tp.frames, tp.travels_mm, strict=True)))
    return CaptureSet(xray_view(tp.high), frames, PITCH_MM, "virtual scanner pass")


def write_pass(out: Path, camera: RehearsalCamera, geometry: TargetGeometry, placement: TargetPlacement,
               scanner_seed: int = 11, seed: int = 1, offsets_mm: Sequence[float] = (-120.0, 0.0, 120.0)) -> Path:
    """Write a pass in the capture-set layout ``edge calibrate homography|check`` read; returns capture.yaml."""
    tp = simulate_target_pass(camera.camera(), DualEnergyScanner(seed=scanner_seed), geometry, placement,
                              tuple(offsets_mm), seed=seed)
    write_capture_set(str(out), tp, PITCH_MM)
    return out / "capture.yaml"


@dataclass(frozen=True, slots=True)
class Commissioned:
    """What ``commission_camera`` produced: the saved calibration and the two reports behind it."""

    calibration: calfile.CameraCalibration
    intrinsics: IntrinsicsReport
    homography: HomographyReport
    capture: CaptureSet


def commission_camera(path: Path, camera: RehearsalCamera, geometry: TargetGeometry | None = None, views: int = 9,
                      say: Callable[[str], None] = lambda _: None) -> Commissioned:
    """Intrinsics from ChArUco views, then the homography from one target pass, saved to ``path``.

    The same functions and the same refusal thresholds as ``edge calibrate camera`` and ``homography``
    (1 px reprojection RMS; 2 px RMS, 5 px max, 12 inliers), so the demo's camera is commissioned like a lane's.

    Raises:
        CalibrationError: a step failed or was refused (nothing saved then).
    """
    geom = geometry if geometry is not None else TargetGeometry()
    spec = board_spec(geom)
    cam = camera.camera()
    shots = simulate_intrinsics_views(cam, geom, n=views, seed=5)
    intr = calibrate_intrinsics([(f"view_{i:02d}", v) for i, v in enumerate(shots)], spec)
    if intr.intrinsics.accuracy.rms_px > 1.0:
        raise CalibrationError(f"intrinsics RMS {intr.intrinsics.accuracy.rms_px:.3f} px exceeds 1 px")
    capture = make_pass(camera, geom, TargetPlacement(250.0, 220.0, 3.0))
    hom = estimate_homography(capture, intr.intrinsics, spec, geom.thickness_mm)
    why = check_thresholds(hom.homography.accuracy, 2.0, 5.0)
    if why:
        raise CalibrationError("homography refused: " + "; ".join(why))
    from calib.target import geometry_to_dict

    cal = calfile.CameraCalibration(intr.intrinsics, hom.homography, geometry_to_dict(geom))
    calfile.save(cal, path)
    acc = hom.homography.accuracy
    say(f"exit camera commissioned: intrinsics RMS {intr.intrinsics.accuracy.rms_px:.3f} px, homography RMS "
        f"{acc.rms_px:.3f} px ({acc.rms_mm or 0:.3f} mm) over {acc.inliers} corners; {path}")
    return Commissioned(cal, intr, hom, capture)
