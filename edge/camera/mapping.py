"""Map points from X-ray pixels onto an exit-camera frame: belt translation, homography, lens distortion.

Where it sits: the *map* stage's geometry (``edge/camera``), used by the overlay and by ``calib`` to measure
residuals. Pure numpy/OpenCV on small point sets; no I/O, no camera access.

Conventions: X-ray pixel ``(column, row)`` with pixel centres at integers (channel ``c`` covers belt
``[c, c+1) * pitch``); ``travel_mm`` is how far the item-start line has moved past the X-ray line when the camera
frame was taken (encoder counts since item start x mm per count). On the calibration plane the mapping is the
stored homography; a surface ``height_mm`` above the belt (a parcel's top) is mapped with the camera pose
decomposed from that homography, which removes the parallax a plane-only mapping would have.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from edge.camera.calibration import CameraCalibration, Homography
from edge.errors import CalibrationError

FloatArray = npt.NDArray[np.float64]


def decompose_pose(
    h_xray: FloatArray, camera_matrix: FloatArray, pitch_mm: float, reference_travel_mm: float,
    plane_height_mm: float,
) -> tuple[FloatArray, FloatArray]:
    """Camera pose (R, t) of the belt frame from an X-ray → undistorted-camera homography and the intrinsics.

    Belt frame: X across (mm from channel 0 edge), Y against travel (item y minus travel), Z down, origin on the
    belt at the X-ray line. A world point ``P`` is at camera coordinates ``R @ P + t``.
    """
    p = pitch_mm
    # world (X, Y) on the plane → X-ray px at the reference travel
    a_w = np.array([[1 / p, 0.0, -0.5], [0.0, 1 / p, reference_travel_mm / p - 0.5], [0.0, 0.0, 1.0]])
    g = np.linalg.inv(camera_matrix) @ h_xray @ a_w
    scale = 2.0 / (np.linalg.norm(g[:, 0]) + np.linalg.norm(g[:, 1]))
    g = g * scale
    if g[2, 2] < 0:  # the plane must lie in front of the camera
        g = -g
    r = np.stack([g[:, 0], g[:, 1], np.cross(g[:, 0], g[:, 1])], axis=1)
    u, _, vt = np.linalg.svd(r)
    r = u @ vt
    if np.linalg.det(r) < 0:
        r = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    t_plane = g[:, 2]
    t = t_plane + plane_height_mm * r[:, 2]  # plane is at Z = -plane_height
    return np.asarray(r, dtype=np.float64), np.asarray(t, dtype=np.float64)


class CameraMapper:
    """X-ray → camera mapping built from a complete calibration."""

    def __init__(self, calibration: CameraCalibration) -> None:
        if calibration.homography is None:
            raise CalibrationError("camera calibration has no homography yet: run `edge calibrate homography`")
        self.calibration = calibration
        self._h: Homography = calibration.homography
        self._k = np.asarray(calibration.intrinsics.camera_matrix, dtype=np.float64)
        self._k_inv = np.linalg.inv(self._k)
        self._dist = np.asarray(calibration.intrinsics.dist_coeffs, dtype=np.float64)
        self._m = np.asarray(self._h.matrix, dtype=np.float64)
        self._m_inv = np.linalg.inv(self._m)
        self._rvec = cv2.Rodrigues(np.asarray(self._h.rotation, dtype=np.float64))[0]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.calibration.intrinsics.image_size

    @property
    def pitch_mm(self) -> float:
        return self._h.pitch_mm

    @property
    def plane_height_mm(self) -> float:
        return self._h.plane_height_mm

    def view_centre_travel_mm(self, height_mm: float | None = None) -> float:
        """Downstream distance from the X-ray line of the belt point imaged at the principal point."""
        k = self._k
        centre = np.array([[k[0, 2], k[1, 2]]])
        xr = self.camera_to_xray(centre, travel_mm=self._h.reference_travel_mm, height_mm=height_mm)
        y_item = (xr[0, 1] + 0.5) * self._h.pitch_mm
        return float(self._h.reference_travel_mm - y_item)

    def xray_to_camera(self, xray_px: FloatArray, travel_mm: float, height_mm: float | None = None) -> FloatArray:
        """(N, 2) X-ray px → (N, 2) distorted camera px for a frame taken at ``travel_mm``.

        ``height_mm`` is the height above the belt of the surface the points lie on; ``None`` = the calibration
        plane (exact homography path).
        """
        pts = np.asarray(xray_px, dtype=np.float64).reshape(-1, 2)
        if pts.shape[0] == 0:
            return np.zeros((0, 2))
        if height_mm is None or abs(height_mm - self._h.plane_height_mm) < 1e-9:
            shifted = pts.copy()
            shifted[:, 1] -= (travel_mm - self._h.reference_travel_mm) / self._h.pitch_mm
            und = _apply_h(self._m, shifted)
            return self.distort(und)
        p = self._h.pitch_mm
        world = np.stack([(pts[:, 0] + 0.5) * p, (pts[:, 1] + 0.5) * p - travel_mm,
                          np.full(pts.shape[0], -float(height_mm))], axis=1)
        img, _ = cv2.projectPoints(world, self._rvec, self._h.translation_mm, self._k, self._dist)
        return np.asarray(img, dtype=np.float64).reshape(-1, 2)

    def camera_to_xray(self, cam_px: FloatArray, travel_mm: float, height_mm: float | None = None) -> FloatArray:
        """Inverse mapping: (N, 2) distorted camera px → X-ray px of the item at ``travel_mm``."""
        und = self.undistort(cam_px)
        if height_mm is None or abs(height_mm - self._h.plane_height_mm) < 1e-9:
            xr = _apply_h(self._m_inv, und)
            xr[:, 1] += (travel_mm - self._h.reference_travel_mm) / self._h.pitch_mm
            return xr
        r = np.asarray(self._h.rotation)
        t = np.asarray(self._h.translation_mm)
        rays = (self._k_inv @ np.hstack([und, np.ones((und.shape[0], 1))]).T).T @ r  # world directions
        centre = -r.T @ t
        s = (-float(height_mm) - centre[2]) / rays[:, 2]
        world = centre + s[:, None] * rays
        p = self._h.pitch_mm
        return np.stack([world[:, 0] / p - 0.5, (world[:, 1] + travel_mm) / p - 0.5], axis=1)

    def distort(self, undistorted_px: FloatArray) -> FloatArray:
        pts = np.asarray(undistorted_px, dtype=np.float64).reshape(-1, 2)
        norm = (self._k_inv @ np.hstack([pts, np.ones((pts.shape[0], 1))]).T).T
        obj = norm / norm[:, 2:3]
        img, _ = cv2.projectPoints(obj, np.zeros(3), np.zeros(3), self._k, self._dist)
        return np.asarray(img, dtype=np.float64).reshape(-1, 2)

    def undistort(self, distorted_px: npt.ArrayLike) -> FloatArray:
        return undistort_points(distorted_px, self._k, self._dist)


def undistort_points(
    distorted_px: npt.ArrayLike, camera_matrix: npt.ArrayLike, dist_coeffs: npt.ArrayLike
) -> FloatArray:
    """Distorted → undistorted pixels in the same camera matrix (many iterations: wide lenses need them)."""
    pts = np.asarray(distorted_px, dtype=np.float64).reshape(-1, 1, 2)
    if pts.shape[0] == 0:
        return np.zeros((0, 2))
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-9)
    k = np.asarray(camera_matrix, dtype=np.float64)
    d = np.asarray(dist_coeffs, dtype=np.float64)
    out = cv2.undistortPoints(pts, k, d, None, None, k, crit)
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def densify(polygon_px: FloatArray, max_step_px: float = 6.0) -> FloatArray:
    """Insert points along a closed polygon's edges so that lens distortion bends them as it should."""
    poly = np.asarray(polygon_px, dtype=np.float64).reshape(-1, 2)
    if poly.shape[0] < 2:
        return poly
    out = []
    for i in range(poly.shape[0]):
        a, b = poly[i], poly[(i + 1) % poly.shape[0]]
        n = max(int(np.ceil(np.linalg.norm(b - a) / max_step_px)), 1)
        for k in range(n):
            out.append(a + (b - a) * (k / n))
    return np.asarray(out, dtype=np.float64)


def map_outline(mapper: CameraMapper, polygon_px: FloatArray, travel_mm: float, height_mm: float | None = None,
                max_step_px: float = 6.0) -> tuple[FloatArray, FloatArray]:
    """A closed X-ray outline on the camera frame, mapped once: (densified points to draw, its own vertices).

    The vertices are rows of the densified outline (each edge starts at its vertex), so the outline that is
    drawn and the one that is published come from one call of :meth:`CameraMapper.xray_to_camera` (a point's
    mapping does not depend on the others, so the vertices are exactly what mapping them alone gives).
    """
    dense, index = densify_indexed(polygon_px, max_step_px)
    mapped = mapper.xray_to_camera(dense, travel_mm, height_mm)
    return mapped, mapped[index]


def densify_indexed(polygon_px: FloatArray, max_step_px: float = 6.0) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """:func:`densify`, and the rows of the result that are the polygon's own vertices (in order)."""
    poly = np.asarray(polygon_px, dtype=np.float64).reshape(-1, 2)
    if poly.shape[0] < 2:
        return poly, np.arange(poly.shape[0])
    steps = np.maximum(np.ceil(np.linalg.norm(np.roll(poly, -1, axis=0) - poly, axis=1) / max_step_px), 1)
    index = np.concatenate([[0], np.cumsum(steps)[:-1]]).astype(np.intp)
    return densify(poly, max_step_px), index


def _apply_h(m: npt.NDArray[np.floating], pts: npt.NDArray[np.floating]) -> FloatArray:
    hom = np.hstack([pts, np.ones((pts.shape[0], 1))]) @ m.T
    return np.asarray(hom[:, :2] / hom[:, 2:3], dtype=np.float64)
