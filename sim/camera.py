"""The virtual exit camera: a wide-angle pinhole camera above the belt, downstream of the X-ray line.

Where it sits: ``sim/``. It renders what a real exit camera would see (the outsides of parcels: cardboard, print,
labels, tape; the calibration target's print; the belt) and, because its pose, intrinsics and distortion are
known, it also gives the *true* X-ray → camera mapping so that ``calib/`` results can be checked against truth.
It must not know anything about the contents of parcels, and it must not be imported by ``edge/``.

World frame (millimetres, right-handed): origin on the belt surface at the X-ray line, on the channel-0 edge;
X across the belt (the detector's channel direction), Y along the belt *against* the travel direction, Z down
into the belt. A point at item coordinates ``(x, y)`` (x from channel 0, y from the item-start line) on a surface
``h`` mm above the belt, when the item-start line has travelled ``d`` mm past the X-ray line, is at world
``(x, y - d, -h)``. With this choice the X-ray image (columns = x, rows = y) and a camera looking straight down
are not mirror images of each other, so ArUco markers read correctly in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from sim.board import TargetGeometry
from sim.target import TargetPlacement

FloatArray = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class CameraSpec:
    """Intrinsics, lens distortion and mounting of the exit camera.

    Attributes:
        width_px, height_px: image size.
        fx, fy, cx, cy: pinhole intrinsics in pixels.
        k1, k2, p1, p2, k3: OpenCV radial/tangential distortion (barrel: k1 < 0, a wide lens).
        across_mm: optical centre across the belt, from the channel-0 edge.
        downstream_mm: optical centre downstream of the X-ray line.
        mount_height_mm: optical centre above the belt surface.
        tilt_deg: rotation about the camera x axis (looks slightly up- or downstream).
        roll_deg: rotation about the camera y axis.
        yaw_deg: rotation about the optical axis (a camera never sits perfectly square to the belt).
        fps: frame rate.
        belt_width_mm: width of the belt surface (drawn as rubber; outside is the frame rail).
        belt_centre_mm: belt centre line across, from the channel-0 edge (640 x 0.8 mm detector: 256).
        noise_sigma: Gaussian sensor noise in grey levels.
    """

    width_px: int = 1280
    height_px: int = 720
    fx: float = 860.0
    fy: float = 862.0
    cx: float = 647.0
    cy: float = 355.0
    k1: float = -0.30
    k2: float = 0.11
    p1: float = 0.0006
    p2: float = -0.0004
    k3: float = -0.018
    across_mm: float = 262.0
    downstream_mm: float = 750.0
    mount_height_mm: float = 800.0
    tilt_deg: float = 6.0
    roll_deg: float = -2.0
    yaw_deg: float = 1.5
    fps: float = 10.0
    belt_width_mm: float = 560.0
    belt_centre_mm: float = 256.0
    noise_sigma: float = 1.5

    def camera_matrix(self) -> FloatArray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def dist_coeffs(self) -> FloatArray:
        return np.array([self.k1, self.k2, self.p1, self.p2, self.k3], dtype=np.float64)

    def rotation(self) -> FloatArray:
        """World → camera rotation (camera x right, y down, z forward; straight down = identity)."""
        t, r, y = np.deg2rad([self.tilt_deg, self.roll_deg, self.yaw_deg])
        rx = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
        ry = np.array([[np.cos(r), 0, np.sin(r)], [0, 1, 0], [-np.sin(r), 0, np.cos(r)]])
        rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
        return np.asarray(rx @ ry @ rz, dtype=np.float64)

    def centre_world(self) -> FloatArray:
        return np.array([self.across_mm, -self.downstream_mm, -self.mount_height_mm])


class Footprint(Protocol):
    """What the camera needs of a parcel (``sim.scene.ParcelFootprint`` satisfies it)."""

    @property
    def centre_x_mm(self) -> float: ...
    @property
    def centre_y_mm(self) -> float: ...
    @property
    def width_mm(self) -> float: ...
    @property
    def length_mm(self) -> float: ...
    @property
    def height_mm(self) -> float: ...
    @property
    def rotation_deg(self) -> float: ...
    @property
    def surface_seed(self) -> int: ...


@dataclass(frozen=True, slots=True)
class PlacedFootprint:
    """A parcel on the belt: its footprint (item mm) and the item-start travel it belongs to.

    ``item_start_travel_mm`` is how far the belt had moved when this item's line 0 was scanned, on the same
    travel scale that ``ExitCamera.render`` is given.
    """

    footprint: Footprint
    item_start_travel_mm: float


@dataclass(frozen=True, slots=True)
class PlacedTarget:
    """The calibration target lying flat on the belt (``placement`` in item mm of its scan)."""

    geometry: TargetGeometry
    placement: TargetPlacement
    item_start_travel_mm: float


@dataclass(frozen=True, slots=True)
class PosedTarget:
    """The target held in the air in any pose (for intrinsics): board mm → world mm via ``R @ p + t``."""

    geometry: TargetGeometry
    rotation: FloatArray
    translation_mm: FloatArray


@dataclass(frozen=True, slots=True)
class _Patch:
    origin: FloatArray  # world mm of texture (0, 0)
    u: FloatArray  # unit vector along texture x
    v: FloatArray  # unit vector along texture y
    size_mm: tuple[float, float]
    texture: U8 = field(repr=False)  # (h, w, 3)
    px_per_mm: float


class ExitCamera:
    """Renders camera frames and gives the true mapping from X-ray pixels to camera pixels."""

    def __init__(self, spec: CameraSpec | None = None, pitch_mm: float = 0.8, seed: int = 0) -> None:
        self.spec = spec if spec is not None else CameraSpec()
        self.pitch_mm = pitch_mm
        self.seed = seed
        self._r = self.spec.rotation()
        self._c = self.spec.centre_world()

    # -- truth ----------------------------------------------------------------------------------------------
    def project_world(self, points_mm: FloatArray) -> FloatArray:
        """(N, 3) world mm → (N, 2) distorted image px."""
        pts = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        rvec, _ = cv2.Rodrigues(self._r)
        tvec = -self._r @ self._c
        img, _ = cv2.projectPoints(pts, rvec, tvec, self.spec.camera_matrix(), self.spec.dist_coeffs())
        return np.asarray(img, dtype=np.float64).reshape(-1, 2)

    def xray_to_camera(self, xray_px: FloatArray, travel_mm: float, height_mm: float = 0.0) -> FloatArray:
        """True mapping: (N, 2) X-ray (column, row) px of a surface ``height_mm`` up → (N, 2) camera px."""
        px = np.asarray(xray_px, dtype=np.float64).reshape(-1, 2)
        x = (px[:, 0] + 0.5) * self.pitch_mm
        y = (px[:, 1] + 0.5) * self.pitch_mm
        world = np.stack([x, y - travel_mm, np.full_like(x, -height_mm)], axis=1)
        return self.project_world(world)

    def view_centre_travel_mm(self) -> float:
        """Downstream distance from the X-ray line of the belt point seen at the image centre."""
        ray = self._r.T @ np.array([0.0, 0.0, 1.0])
        t = -self._c[2] / ray[2]
        return float(-(self._c[1] + t * ray[1]))

    def frame_times(self, start_s: float, end_s: float) -> FloatArray:
        """Capture instants at ``fps`` within ``[start_s, end_s)``."""
        n = int(np.floor((end_s - start_s) * self.spec.fps))
        return start_s + np.arange(max(n, 0)) / self.spec.fps

    # -- rendering ------------------------------------------------------------------------------------------
    def render(
        self,
        travel_mm: float,
        parcels: Sequence[PlacedFootprint] = (),
        targets: Sequence[PlacedTarget | PosedTarget] = (),
        rng: np.random.Generator | None = None,
    ) -> U8:
        """One BGR frame with the belt at ``travel_mm``; returns ``(height_px, width_px, 3) uint8``."""
        rng = rng if rng is not None else np.random.default_rng(self.seed)
        dirs = _ray_directions(self.spec)  # (H, W, 3) world
        h, w = self.spec.height_px, self.spec.width_px
        img = self._belt(travel_mm)
        depth = np.full((h, w), np.inf, dtype=np.float64)
        for patch in self._patches(travel_mm, parcels, targets):
            self._draw(img, depth, dirs, patch)
        shade = _vignette(self.spec)
        out = img.astype(np.float32) * shade[..., None]
        out = np.asarray(cv2.GaussianBlur(out, (0, 0), 0.6), dtype=np.float32)
        out += rng.standard_normal(size=out.shape, dtype=np.float32) * np.float32(self.spec.noise_sigma)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def _patches(
        self,
        travel_mm: float,
        parcels: Sequence[PlacedFootprint],
        targets: Sequence[PlacedTarget | PosedTarget],
    ) -> list[_Patch]:
        patches: list[_Patch] = []
        for p in parcels:
            patches.extend(_parcel_patches(p.footprint, travel_mm - p.item_start_travel_mm))
        for t in targets:
            g = t.geometry
            tex = np.asarray(cv2.cvtColor(g.printed_image(4.0), cv2.COLOR_GRAY2BGR), dtype=np.uint8)
            if isinstance(t, PlacedTarget):
                m = t.placement.board_to_item(g)
                shift = travel_mm - t.item_start_travel_mm
                origin = np.array([m[0, 2], m[1, 2] - shift, -g.thickness_mm])
                u = np.array([m[0, 0], m[1, 0], 0.0])
                v = np.array([m[0, 1], m[1, 1], 0.0])
            else:
                origin = np.asarray(t.translation_mm, dtype=np.float64)
                u = np.asarray(t.rotation, dtype=np.float64)[:, 0]
                v = np.asarray(t.rotation, dtype=np.float64)[:, 1]
            patches.append(_Patch(origin, u, v, (g.width_mm, g.height_mm), tex, 4.0))
        return patches

    def _draw(self, img: U8, depth: FloatArray, dirs_full: FloatArray, p: _Patch) -> None:
        region = self._region(p)
        if region is None:
            return
        ys, xs = region
        dirs = dirs_full[ys, xs]
        n = np.cross(p.u, p.v)
        denom = dirs @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = float((p.origin - self._c) @ n) / denom
        hit = self._c + t[..., None] * dirs
        rel = hit - p.origin
        a = rel @ p.u
        b = rel @ p.v
        sub_depth = depth[ys, xs]
        inside = (t > 0) & (a >= 0) & (a < p.size_mm[0]) & (b >= 0) & (b < p.size_mm[1]) & (t < sub_depth)
        if not inside.any():
            return
        map_x = (a * p.px_per_mm - 0.5).astype(np.float32)
        map_y = (b * p.px_per_mm - 0.5).astype(np.float32)
        sampled = cv2.remap(p.texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # faces that turn away from the light above the belt are darker
        light = float(abs(n[2])) * 0.55 + 0.45
        sub_img = img[ys, xs]
        sub_img[inside] = np.clip(sampled[inside].astype(np.float32) * light, 0, 255).astype(np.uint8)
        sub_depth[inside] = t[inside]

    def _region(self, p: _Patch) -> tuple[slice, slice] | None:
        """Image rows/columns the patch can cover: the pixels whose rays fall in the bounding box of the patch's
        outline in undistorted normalised coordinates (a flat convex patch in front of the camera projects
        inside it), so no lens model is inverted; the whole image when part of the patch is behind the camera."""
        h, w = self.spec.height_px, self.spec.width_px
        s = np.linspace(0.0, 1.0, 9)
        edge = [(a, 0.0) for a in s] + [(1.0, b) for b in s] + [(a, 1.0) for a in s] + [(0.0, b) for b in s]
        pts = np.array([p.origin + a * p.size_mm[0] * p.u + b * p.size_mm[1] * p.v for a, b in edge])
        cam = (pts - self._c) @ self._r.T
        if np.any(cam[:, 2] <= 1.0):
            return (slice(0, h), slice(0, w))
        norm = cam[:, :2] / cam[:, 2:3]
        lo, hi = norm.min(axis=0), norm.max(axis=0)
        xn, yn = _ray_norm(self.spec)
        seen = (xn >= lo[0]) & (xn <= hi[0]) & (yn >= lo[1]) & (yn <= hi[1])
        rows = np.flatnonzero(seen.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(seen.any(axis=0))
        return (slice(max(int(rows[0]) - 2, 0), min(int(rows[-1]) + 3, h)),
                slice(max(int(cols[0]) - 2, 0), min(int(cols[-1]) + 3, w)))

    def _belt(self, travel_mm: float) -> U8:
        tex = _belt_texture(self.seed)
        size = tex.shape[0]
        mx, y0, rail = _belt_geometry(self.spec, size)
        # belt-fixed coordinate along the belt: the frame's own, shifted by the travel (wrapped on the texture)
        my = np.mod(y0 + np.float32(travel_mm % size), np.float32(size))
        grey = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        img = np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
        img[rail] = (150, 150, 155)
        return img


def _parcel_patches(fp: Footprint, shift_mm: float) -> list[_Patch]:
    """Top and four side faces of a box footprint, in world mm for a belt shifted by ``shift_mm``."""
    a = np.deg2rad(fp.rotation_deg)
    c, s = np.cos(a), np.sin(a)
    u = np.array([c, -s, 0.0])
    v = np.array([s, c, 0.0])
    centre = np.array([fp.centre_x_mm, fp.centre_y_mm - shift_mm, 0.0])
    top_origin = centre - u * fp.width_mm / 2 - v * fp.length_mm / 2 + np.array([0, 0, -fp.height_mm])
    top = _parcel_texture(fp.surface_seed, fp.width_mm, fp.length_mm)
    patches = [_Patch(top_origin, u, v, (fp.width_mm, fp.length_mm), top, 2.0)]
    down = np.array([0.0, 0.0, 1.0])
    side = _side_texture(fp.surface_seed)
    corners = [top_origin, top_origin + u * fp.width_mm, top_origin + u * fp.width_mm + v * fp.length_mm,
               top_origin + v * fp.length_mm]
    for k in range(4):
        p0, p1 = corners[k], corners[(k + 1) % 4]
        edge = p1 - p0
        length = float(np.linalg.norm(edge))
        patches.append(_Patch(p0, edge / length, down, (length, fp.height_mm), side, 0.5))
    return patches


@lru_cache(maxsize=4)
def _ray_directions(spec: CameraSpec) -> FloatArray:
    h, w = spec.height_px, spec.width_px
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pix = np.stack([xs.ravel(), ys.ravel()], axis=1).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10)
    norm = cv2.undistortPoints(pix, spec.camera_matrix(), spec.dist_coeffs(), None, None, None, crit).reshape(-1, 2)
    rays = np.concatenate([norm, np.ones((norm.shape[0], 1))], axis=1)
    world = rays @ spec.rotation()  # = (R.T @ ray.T).T
    out = world.reshape(h, w, 3)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=4)
def _ray_norm(spec: CameraSpec) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Undistorted normalised (x, y) of every pixel's ray in the camera frame, (H, W) each."""
    rays = _ray_directions(spec) @ spec.rotation().T  # world back to the camera frame
    xn = (rays[..., 0] / rays[..., 2]).astype(np.float32)
    yn = (rays[..., 1] / rays[..., 2]).astype(np.float32)
    for a in (xn, yn):
        a.setflags(write=False)
    return xn, yn


@lru_cache(maxsize=4)
def _belt_geometry(spec: CameraSpec, size: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32],
                                                          npt.NDArray[np.bool_]]:
    """Where each pixel's ray meets the belt plane (fixed for a camera): x wrapped on the texture, y at zero
    travel (wrapped), and the frame-rail mask outside the belt. ``render`` only shifts y by the travel."""
    dirs = _ray_directions(spec)
    c = spec.centre_world()
    t = -c[2] / dirs[..., 2]
    x = c[0] + t * dirs[..., 0]
    y = c[1] + t * dirs[..., 1]
    mx = np.mod(x, size).astype(np.float32)
    y0 = np.mod(y, size).astype(np.float32)
    rail = np.abs(x - spec.belt_centre_mm) > spec.belt_width_mm / 2
    for a in (mx, y0, rail):
        a.setflags(write=False)
    return mx, y0, rail


@lru_cache(maxsize=4)
def _vignette(spec: CameraSpec) -> npt.NDArray[np.float32]:
    xs, ys = np.meshgrid(np.arange(spec.width_px), np.arange(spec.height_px))
    r2 = ((xs - spec.cx) / spec.fx) ** 2 + ((ys - spec.cy) / spec.fy) ** 2
    return (0.55 + 0.45 / (1.0 + r2) ** 2).astype(np.float32)


@lru_cache(maxsize=2)
def _belt_texture(seed: int) -> U8:
    rng = np.random.default_rng(seed + 77)
    noise = rng.normal(0, 1, (512, 512)).astype(np.float32)
    noise = np.asarray(cv2.GaussianBlur(noise, (0, 0), 2.0), dtype=np.float32)
    tex = 58 + 10 * noise / (noise.std() + 1e-6)
    tex[:, ::64] += 6  # belt joints/ribs give the camera something that moves with the belt
    return np.clip(tex, 0, 255).astype(np.uint8)


def _side_texture(seed: int) -> U8:
    rng = np.random.default_rng(seed)
    base = np.array(_CARDBOARD[int(rng.integers(len(_CARDBOARD)))], dtype=np.float32) * 0.8
    tex = np.empty((8, 8, 3), np.uint8)
    tex[:] = np.clip(base, 0, 255).astype(np.uint8)
    return tex


_CARDBOARD = [(95, 145, 190), (80, 130, 175), (110, 160, 200), (200, 200, 205), (70, 120, 160)]


@lru_cache(maxsize=64)
def _parcel_texture(seed: int, width_mm: float, length_mm: float) -> U8:
    """Top of a parcel at 2 px/mm: cardboard, tape along the length, a shipping label with barcode."""
    rng = np.random.default_rng(seed)
    w = max(round(width_mm * 2), 8)
    h = max(round(length_mm * 2), 8)
    base = np.array(_CARDBOARD[int(rng.integers(len(_CARDBOARD)))], dtype=np.float32)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.5)
    img = base[None, None, :] + 12 * grain[..., None]
    if rng.random() < 0.85:  # packing tape along the flap seam
        tw = int(w * rng.uniform(0.12, 0.2))
        x0 = w // 2 - tw // 2
        img[:, x0:x0 + tw] = img[:, x0:x0 + tw] * 0.7 + np.array([150, 190, 215]) * 0.3 + 20
    if rng.random() < 0.4:  # cross tape
        th = int(h * rng.uniform(0.08, 0.15))
        y0 = int(h * rng.uniform(0.2, 0.7))
        img[y0:y0 + th] = img[y0:y0 + th] * 0.7 + np.array([60, 60, 200]) * 0.3
    img8 = np.clip(img, 0, 255).astype(np.uint8)
    lw = int(min(w * 0.45, 200))
    lh = int(min(h * 0.35, 140))
    if lw > 30 and lh > 24:
        lx = int(rng.uniform(0.05, 0.5) * w)
        ly = int(rng.uniform(0.05, 0.6) * h)
        lx, ly = min(lx, w - lw - 1), min(ly, h - lh - 1)
        cv2.rectangle(img8, (lx, ly), (lx + lw, ly + lh), (245, 245, 245), -1)
        for k in range(3):
            yk = ly + 10 + k * 12
            if yk + 6 < ly + lh * 0.55:
                cv2.line(img8, (lx + 6, yk), (lx + 6 + int(lw * rng.uniform(0.4, 0.9)) - 12, yk), (40, 40, 40), 3)
        bx = lx + 6
        by = ly + int(lh * 0.6)
        while bx < lx + lw - 8:
            bw = int(rng.integers(1, 4))
            cv2.rectangle(img8, (bx, by), (bx + bw - 1, ly + lh - 6), (20, 20, 20), -1)
            bx += bw + int(rng.integers(1, 4))
    img8.setflags(write=False)
    return img8


@dataclass(frozen=True, slots=True)
class TargetPass:
    """The calibration target scanned by the X-ray line and then filmed by the exit camera.

    Attributes:
        high, low: (lines, channels) uint16 raw X-ray scan of the target item.
        frames: camera frames (H, W, 3) uint8 BGR.
        travels_mm: item-start travel at each frame (what the encoder would give).
        placement: where the board lay on the belt (truth).
    """

    high: npt.NDArray[np.uint16]
    low: npt.NDArray[np.uint16]
    frames: tuple[U8, ...]
    travels_mm: tuple[float, ...]
    placement: TargetPlacement


def simulate_target_pass(
    camera: ExitCamera,
    scanner: object,
    geometry: TargetGeometry,
    placement: TargetPlacement,
    frame_offsets_mm: Sequence[float] = (-120.0, 0.0, 120.0),
    margin_mm: float = 40.0,
    seed: int = 0,
) -> TargetPass:
    """Scan the target with ``scanner`` (a ``sim.physics.DualEnergyScanner``) and film it passing the camera.

    Frames are taken when the board centre is ``frame_offsets_mm`` from the camera's view centre (positive =
    already past it), as a real capture at ``fps`` would sample the pass.
    """
    from sim.physics import DualEnergyScanner
    from sim.target import target_path_maps

    if not isinstance(scanner, DualEnergyScanner):
        raise TypeError("scanner must be a sim.physics.DualEnergyScanner")
    rng = np.random.default_rng(seed)
    half = 0.5 * float(np.hypot(geometry.width_mm, geometry.height_mm))
    lines = int(np.ceil((placement.centre_y_mm + half + margin_mm) / camera.pitch_mm))
    maps = target_path_maps(geometry, placement, lines, scanner.spec.channels, camera.pitch_mm)
    raw = scanner.render(maps, rng)
    centre_travel = camera.view_centre_travel_mm() + placement.centre_y_mm
    travels = tuple(float(centre_travel + o) for o in frame_offsets_mm)
    target = PlacedTarget(geometry, placement, 0.0)
    frames = tuple(camera.render(t, targets=[target], rng=rng) for t in travels)
    return TargetPass(np.asarray(raw.high), np.asarray(raw.low), frames, travels, placement)


def write_capture_set(path: str, tp: TargetPass, pitch_mm: float) -> None:
    """Write a pass in the capture-set layout ``calibrate homography`` reads (see docs/calibration.md)."""
    import pathlib

    import yaml

    out = pathlib.Path(path)
    out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "xray_high.png"), tp.high)
    cv2.imwrite(str(out / "xray_low.png"), tp.low)
    frames = []
    for k, (img, travel) in enumerate(zip(tp.frames, tp.travels_mm, strict=True)):
        name = f"camera_{k:03d}.png"
        cv2.imwrite(str(out / name), img)
        frames.append({"file": name, "travel_mm": round(travel, 3)})
    doc = {"pitch_mm": pitch_mm, "xray": {"high": "xray_high.png", "low": "xray_low.png"}, "frames": frames}
    (out / "capture.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def simulate_intrinsics_views(
    camera: ExitCamera, geometry: TargetGeometry, n: int = 12, seed: int = 0
) -> list[U8]:
    """The target held by hand in ``n`` poses in front of the camera (tilted, spread over the image)."""
    rng = np.random.default_rng(seed)
    spec = camera.spec
    k_inv = np.linalg.inv(spec.camera_matrix())
    r_wc = spec.rotation()  # world → camera
    c = spec.centre_world()
    grid = [(fx, fy) for fy in (0.3, 0.5, 0.7) for fx in (0.25, 0.5, 0.75)]
    views = []
    for k in range(n):
        gx, gy = grid[k % len(grid)]
        u = gx * spec.width_px + rng.uniform(-60, 60)
        v = gy * spec.height_px + rng.uniform(-40, 40)
        depth = rng.uniform(520.0, 760.0)
        centre_c = depth * (k_inv @ np.array([u, v, 1.0]))
        ax, ay, az = np.deg2rad(rng.uniform([-30, -30, -20], [30, 30, 20]))
        rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
        ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
        rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
        r_board_c = rx @ ry @ rz
        r_board_w = r_wc.T @ r_board_c
        centre_w = r_wc.T @ centre_c + c
        origin = centre_w - r_board_w @ np.array([geometry.width_mm / 2, geometry.height_mm / 2, 0.0])
        pose = PosedTarget(geometry, r_board_w, origin)
        views.append(camera.render(0.0, targets=[pose], rng=rng))
    return views
