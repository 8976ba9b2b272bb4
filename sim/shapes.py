"""2-D thickness-map primitives: how the scene builder draws an object's per-material path lengths.

Where it sits: under ``sim/objects.py``, ``sim/threats.py`` and ``sim/scene.py``. An object is drawn once on its
own axis-aligned :class:`Canvas` (local millimetres, origin at the object's centre, x across, y along), one
``float32`` layer of path length (mm) per material; :meth:`Canvas.place` then rotates and translates the layers
into an item's pixel grid with linear interpolation (partial-volume edges, as a real detector sees them).

Profiles are physical: a cylinder lying on the belt is ``2 sqrt(r² - d²)`` thick across its axis (a bottle is
thicker in the middle), a dome falls off as ``sqrt(1 - ρ²)``, a wire's chord follows its round cross-section.

Must not: know about materials' physics, do I/O, or hold global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Placed:
    """An object's layers in item pixels: a window ``rows x cols`` of the item and one map per material.

    Attributes:
        row0, col0: top-left pixel of the window in the item (may be negative before clipping).
        layers: material → ``(h, w) float32`` path length in mm over the window.
    """

    row0: int
    col0: int
    layers: dict[str, F32]

    @property
    def shape(self) -> tuple[int, int]:
        first = next(iter(self.layers.values()))
        return (int(first.shape[0]), int(first.shape[1]))

    def support(self, min_mm: float = 0.05) -> NDArray[np.bool_]:
        """Pixels where the object has at least ``min_mm`` of material (its mask in the window)."""
        total = np.zeros(self.shape, np.float32)
        for layer in self.layers.values():
            total += layer
        return total >= min_mm


class Canvas:
    """An object's local drawing surface: ``width_mm`` across (x) by ``length_mm`` along (y), centred at 0."""

    def __init__(self, width_mm: float, length_mm: float, pitch_mm: float, margin_px: int = 2) -> None:
        self.pitch = float(pitch_mm)
        self.w = int(np.ceil(width_mm / pitch_mm)) + 2 * margin_px
        self.h = int(np.ceil(length_mm / pitch_mm)) + 2 * margin_px
        xs = (np.arange(self.w, dtype=np.float32) - (self.w - 1) / 2.0) * self.pitch
        ys = (np.arange(self.h, dtype=np.float32) - (self.h - 1) / 2.0) * self.pitch
        self.x, self.y = np.meshgrid(xs, ys)
        self.layers: dict[str, F32] = {}

    # -- accumulation ---------------------------------------------------------------------------------------
    def add(self, material: str, thickness: F32, win: tuple[slice, slice] | None = None) -> None:
        """Add path length (mm) of ``material`` (over window ``win``); overlapping parts simply add up."""
        if material not in self.layers:
            self.layers[material] = np.zeros((self.h, self.w), np.float32)
        if win is None:
            self.layers[material] += thickness.astype(np.float32, copy=False)
        else:
            self.layers[material][win] += thickness.astype(np.float32, copy=False)

    def _win(self, cx: float, cy: float, hx: float, hy: float) -> tuple[slice, slice]:
        """Canvas window covering ``cx ± hx``, ``cy ± hy`` mm (plus a pixel), so primitives stay cheap."""
        c0 = int(np.floor((cx - hx) / self.pitch + (self.w - 1) / 2.0)) - 1
        c1 = int(np.ceil((cx + hx) / self.pitch + (self.w - 1) / 2.0)) + 2
        r0 = int(np.floor((cy - hy) / self.pitch + (self.h - 1) / 2.0)) - 1
        r1 = int(np.ceil((cy + hy) / self.pitch + (self.h - 1) / 2.0)) + 2
        return (slice(max(r0, 0), max(min(r1, self.h), 0)), slice(max(c0, 0), max(min(c1, self.w), 0)))

    def _cover(self, signed_inside_mm: F32) -> F32:
        """Area coverage of a pixel from a signed distance to the edge (positive inside), 1-pixel ramp."""
        return np.clip(signed_inside_mm / self.pitch + 0.5, 0.0, 1.0).astype(np.float32)

    # -- primitives (coordinates in mm from the object centre) -----------------------------------------------
    def rect(self, material: str, cx: float, cy: float, w: float, ln: float, t: float, r: float = 0.0) -> None:
        """A slab ``w x ln`` of uniform thickness ``t`` with corner radius ``r``."""
        win = self._win(cx, cy, w / 2, ln / 2)
        dx = np.abs(self.x[win] - cx) - (w / 2 - r)
        dy = np.abs(self.y[win] - cy) - (ln / 2 - r)
        outside = np.hypot(np.maximum(dx, 0), np.maximum(dy, 0)) + np.minimum(np.maximum(dx, dy), 0)
        self.add(material, self._cover(r - outside) * t, win)

    def frame(self, material: str, cx: float, cy: float, w: float, ln: float, wall: float, t: float) -> None:
        """A rectangular frame (walls of width ``wall``) of thickness ``t``: a box edge seen from above."""
        win = self._win(cx, cy, w / 2, ln / 2)
        ax, ay = np.abs(self.x[win] - cx), np.abs(self.y[win] - cy)
        inside_outer = np.minimum(w / 2 - ax, ln / 2 - ay)
        inside_inner = np.minimum(w / 2 - wall - ax, ln / 2 - wall - ay)
        self.add(material, (self._cover(inside_outer) - self._cover(inside_inner)) * t, win)

    def ellipse(self, material: str, cx: float, cy: float, a: float, b: float, t: float, dome: bool = False) -> None:
        """An ellipse with semi-axes ``a`` (x) and ``b`` (y); flat, or a dome ``t sqrt(1 - ρ²)``."""
        win = self._win(cx, cy, a, b)
        rho = np.sqrt(((self.x[win] - cx) / a) ** 2 + ((self.y[win] - cy) / b) ** 2)
        cover = self._cover((1.0 - rho) * min(a, b))
        if dome:
            self.add(material, cover * t * np.sqrt(np.clip(1.0 - rho**2, 0.0, 1.0)), win)
        else:
            self.add(material, cover * t, win)

    def cylinder(self, material: str, cx: float, cy: float, length: float, radius: float,
                 wall: float | None = None, axis: str = "y", fill: float = 1.0) -> None:
        """A cylinder lying on the belt, axis along ``axis``; solid, or a tube with wall thickness ``wall``.

        ``fill`` < 1 draws a liquid that only partly fills a lying bottle (path scaled, a fair approximation).
        """
        win = self._win(cx, cy, radius, length / 2) if axis == "y" else self._win(cx, cy, length / 2, radius)
        across = (self.x[win] - cx) if axis == "y" else (self.y[win] - cy)
        along = (self.y[win] - cy) if axis == "y" else (self.x[win] - cx)
        chord = 2.0 * np.sqrt(np.clip(radius**2 - across**2, 0.0, None))
        if wall is not None:
            inner = max(radius - wall, 0.0)
            chord = chord - 2.0 * np.sqrt(np.clip(inner**2 - across**2, 0.0, None))
        cover = self._cover(length / 2 - np.abs(along))
        self.add(material, chord * cover * fill, win)

    def disc(self, material: str, cx: float, cy: float, r: float, t: float, hole_r: float = 0.0) -> None:
        """A flat disc (coin, washer, can end) of thickness ``t``, optionally with a hole."""
        win = self._win(cx, cy, r, r)
        d = np.hypot(self.x[win] - cx, self.y[win] - cy)
        cover = self._cover(r - d)
        if hole_r > 0:
            cover = cover - self._cover(hole_r - d)
        self.add(material, cover * t, win)

    def polygon(self, material: str, pts_mm: Sequence[tuple[float, float]], t: float,
                taper_axis: str | None = None, taper_from: float = 1.0, taper_to: float = 1.0) -> None:
        """A filled polygon of thickness ``t``; optional linear taper across ``x`` or ``y`` (a blade's bevel).

        The taper multiplies ``t`` from ``taper_from`` at the polygon's low edge to ``taper_to`` at its high edge.
        """
        mask = self.polygon_mask(pts_mm)
        thick = mask * t
        if taper_axis is not None:
            coord = self.x if taper_axis == "x" else self.y
            vals = np.asarray(pts_mm, np.float32)[:, 0 if taper_axis == "x" else 1]
            lo, hi = float(vals.min()), float(vals.max())
            frac = np.clip((coord - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
            thick = thick * (taper_from + (taper_to - taper_from) * frac)
        self.add(material, thick.astype(np.float32))

    def polygon_mask(self, pts_mm: Sequence[tuple[float, float]]) -> F32:
        """Anti-aliased coverage of a polygon given in local mm."""
        pts = np.asarray(pts_mm, np.float64)
        px = np.empty_like(pts)
        px[:, 0] = pts[:, 0] / self.pitch + (self.w - 1) / 2.0
        px[:, 1] = pts[:, 1] / self.pitch + (self.h - 1) / 2.0
        canvas = np.zeros((self.h, self.w), np.uint8)
        cv2.fillPoly(canvas, [np.rint(px * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
        return canvas.astype(np.float32) / 255.0

    def wire(self, material: str, pts_mm: Sequence[tuple[float, float]], diameter: float) -> None:
        """A round wire or cable along a polyline: chord ``2 sqrt(r² - d²)`` from the centre line."""
        pts = np.asarray(pts_mm, np.float64)
        px = np.empty_like(pts)
        px[:, 0] = pts[:, 0] / self.pitch + (self.w - 1) / 2.0
        px[:, 1] = pts[:, 1] / self.pitch + (self.h - 1) / 2.0
        line = np.full((self.h, self.w), 255, np.uint8)
        cv2.polylines(line, [np.rint(px * 16).astype(np.int32)], False, 0, 1, lineType=cv2.LINE_8, shift=4)
        dist = cv2.distanceTransform(line, cv2.DIST_L2, 3) * self.pitch
        r = diameter / 2.0
        self.add(material, (2.0 * np.sqrt(np.clip(r * r - dist * dist, 0.0, None))).astype(np.float32))

    def wrinkle(self, material: str, rng: np.random.Generator, scale_mm: float, amplitude: float) -> None:
        """Modulate a material's layer with smooth random texture (folds, creases, uneven fill) in place.

        The factor is ``1 + amplitude * n`` with ``n`` smooth unit-variance noise of feature size ``scale_mm``,
        clipped to [0.2, 2] so material never vanishes or turns negative.
        """
        if material not in self.layers:
            return
        step = max(scale_mm / self.pitch, 1.0)
        gh, gw = max(int(self.h / step) + 2, 2), max(int(self.w / step) + 2, 2)
        coarse = rng.standard_normal((gh, gw)).astype(np.float32)
        noise = np.asarray(cv2.resize(coarse, (self.w, self.h), interpolation=cv2.INTER_CUBIC), np.float32)
        noise /= np.float32(max(float(noise.std()), 1e-6))
        self.layers[material] *= np.clip(1.0 + amplitude * noise, 0.2, 2.0)

    def blob(self, material: str, rng: np.random.Generator, cx: float, cy: float, w: float, ln: float, t: float,
             irregularity: float = 0.12, n: int = 18) -> None:
        """A soft irregular outline (a folded garment, a bag of food) of about ``w x ln``."""
        a = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
        # superellipse (squarish) with radial jitter
        ca, sa = np.cos(a), np.sin(a)
        rx = np.sign(ca) * np.abs(ca) ** 0.5 * w / 2
        ry = np.sign(sa) * np.abs(sa) ** 0.5 * ln / 2
        jitter = 1.0 + irregularity * rng.standard_normal(n)
        pts = [(float(cx + x * j), float(cy + y * j)) for x, y, j in zip(rx, ry, np.clip(jitter, 0.6, 1.3),
                                                                           strict=True)]
        self.polygon(material, pts, t)

    def paste(self, other: Canvas, cx: float, cy: float) -> None:
        """Add another (unrotated) canvas's layers at ``(cx, cy)``; used to compose objects from parts."""
        c0 = round(float(cx / self.pitch + (self.w - 1) / 2.0 - (other.w - 1) / 2.0))
        r0 = round(float(cy / self.pitch + (self.h - 1) / 2.0 - (other.h - 1) / 2.0))
        rs, cs = max(r0, 0), max(c0, 0)
        re, ce = min(r0 + other.h, self.h), min(c0 + other.w, self.w)
        if rs >= re or cs >= ce:
            return
        for mat, layer in other.layers.items():
            if mat not in self.layers:
                self.layers[mat] = np.zeros((self.h, self.w), np.float32)
            self.layers[mat][rs:re, cs:ce] += layer[rs - r0:re - r0, cs - c0:ce - c0]

    # -- placement -------------------------------------------------------------------------------------------
    def place(self, centre_x_mm: float, centre_y_mm: float, rotation_deg: float, mirror: bool = False) -> Placed:
        """Rotate by ``rotation_deg`` and put the centre at item mm ``(x, y)``; returns item-pixel layers.

        Rotation follows the exit-camera convention (``sim/camera.py``): the local x axis maps to item direction
        ``(cos a, -sin a)`` and the local y axis to ``(sin a, cos a)``.
        """
        a = np.deg2rad(rotation_deg)
        c, s = float(np.cos(a)), float(np.sin(a))
        half_w, half_h = (self.w - 1) / 2.0, (self.h - 1) / 2.0
        corners = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
        sx = -1.0 if mirror else 1.0
        # local pixel offset (u, v) → item pixel offset: u * (c, -s) * sx + v * (s, c)
        rot = np.array([[c * sx, s], [-s * sx, c]])
        item_off = corners @ rot.T
        centre_col = centre_x_mm / self.pitch - 0.5
        centre_row = centre_y_mm / self.pitch - 0.5
        col0 = int(np.floor(centre_col + item_off[:, 0].min())) - 1
        row0 = int(np.floor(centre_row + item_off[:, 1].min())) - 1
        out_w = int(np.ceil(centre_col + item_off[:, 0].max())) + 2 - col0
        out_h = int(np.ceil(centre_row + item_off[:, 1].max())) + 2 - row0
        # forward map: local pixel (i, j) → output pixel
        m = np.zeros((2, 3), np.float64)
        m[:, :2] = rot
        m[:, 2] = np.array([centre_col - col0, centre_row - row0]) - rot @ np.array([half_w, half_h])
        layers: dict[str, F32] = {
            # negative parts (windows cut out of a part) must never leave negative path length behind
            mat: np.asarray(cv2.warpAffine(np.maximum(layer, 0.0), m, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                           borderMode=cv2.BORDER_CONSTANT), np.float32)
            for mat, layer in self.layers.items()
        }
        return Placed(row0, col0, layers)
