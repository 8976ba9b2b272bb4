"""Helpers for the exit-camera runtime tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import cv2
import numpy as np

from edge.camera.calibration import Accuracy, CameraCalibration, Homography, Intrinsics
from edge.camera.mapping import decompose_pose, undistort_points
from sim.camera import ExitCamera

PLANE_MM = 4.2


def calibration_from_truth(cam: ExitCamera, reference_travel_mm: float = 800.0) -> CameraCalibration:
    """A calibration built from the virtual camera's true projection (independent of ``calib``)."""
    xs, ys = np.meshgrid(np.linspace(0, 639, 20), np.linspace(-200, 600, 20))
    src = np.stack([xs.ravel(), ys.ravel()], axis=1)
    dst = cam.xray_to_camera(src, reference_travel_mm, PLANE_MM)
    w, h_px = cam.spec.width_px, cam.spec.height_px
    ok = (dst[:, 0] > -50) & (dst[:, 0] < w + 50) & (dst[:, 1] > -50) & (dst[:, 1] < h_px + 50)
    k, d = cam.spec.camera_matrix(), cam.spec.dist_coeffs()
    h, _ = cv2.findHomography(src[ok], undistort_points(dst[ok], k, d), 0)
    r, t = decompose_pose(h, k, cam.pitch_mm, reference_travel_mm, PLANE_MM)
    intr = Intrinsics((cam.spec.width_px, cam.spec.height_px), k, d, Accuracy(0.0, 0.0), "truth")
    hom = Homography(h, reference_travel_mm, cam.pitch_mm, PLANE_MM, r, t, Accuracy(0.0, 0.0), "truth")
    return CameraCalibration(intr, hom)
