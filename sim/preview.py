"""Simple pseudo-colour previews of simulated scans (operator-style: organic orange, mixed green, metal blue).

Where it sits: the last step of ``sim generate`` and of the gallery. It flat-fields raw counts with the scanner's
own dark and air lines, estimates effective Z from ``R = ln T_low / ln T_high`` against reference curves computed
from the same physics (a noise-free stand-in for the commissioning step wedge), and colours by Z class with
brightness by high-energy attenuation; impenetrable pixels are black (PHYSICS.md, pseudo-colour).

This is a *preview* for datasets and documentation. The runtime's calibrated conditioning and palette live in
``edge/`` and must be used for anything the box decides on. Must not: import ``edge`` internals or torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sim.physics import DualEnergyScanner, RawScan

R_GRID = np.linspace(0.8, 3.5, 271)
REFERENCE_MATERIALS: tuple[str, ...] = ("pe", "pom", "water", "glass", "aluminium", "titanium", "steel", "copper")


@dataclass(frozen=True, slots=True)
class ZLookup:
    """Reference curves ``R_m(a)`` over high-energy attenuation ``a = -ln T_high`` for materials of known Z.

    Attributes:
        attenuation: ``(A,)`` grid of ``-ln T_high``.
        r_curves: ``(M, A)`` R of each reference material along the grid, rows sorted by Z.
        z: ``(M,)`` effective Z of the references.
    """

    attenuation: NDArray[np.float64]
    r_curves: NDArray[np.float64]
    z: NDArray[np.float64]
    table: NDArray[np.float32]
    """``(A, R_BINS)`` Z tabulated over the attenuation grid and ``R_GRID``: the fast path of ``effective_z``."""

    def bins(self, t_low: NDArray[np.floating], t_high: NDArray[np.floating]) -> tuple[NDArray[np.intp], ...]:
        """Nearest (attenuation, R) table bin of every pixel; bin 0 of attenuation means air."""
        tl = np.clip(np.asarray(t_low, np.float32), 1e-6, 1.0)
        th = np.clip(np.asarray(t_high, np.float32), 1e-6, 1.0)
        a = -np.log(th)
        r = -np.log(tl) / np.maximum(a, np.float32(1e-6))
        a0, a1 = float(self.attenuation[0]), float(self.attenuation[-1])
        n_a, n_r = len(self.attenuation), len(R_GRID)
        ia = np.clip(np.rint((a - a0) / np.float32(a1 - a0) * (n_a - 1)), 0, n_a - 1).astype(np.intp)
        ia[a <= a0] = 0
        ir = np.clip(np.rint((r - R_GRID[0]) / np.float32(R_GRID[-1] - R_GRID[0]) * (n_r - 1)), 0, n_r - 1)
        return ia, ir.astype(np.intp)

    def effective_z_fast(self, t_low: NDArray[np.floating], t_high: NDArray[np.floating]) -> NDArray[np.float32]:
        """Table lookup version of :meth:`effective_z` (nearest bin), ~10x faster, for previews; 0 in air."""
        ia, ir = self.bins(t_low, t_high)
        z = self.table[ia, ir]
        return np.where(ia > 0, z, np.float32(0.0)).astype(np.float32)

    def effective_z(self, t_low: NDArray[np.floating], t_high: NDArray[np.floating]) -> NDArray[np.float32]:
        """Per-pixel Z estimate (0 where there is almost no attenuation)."""
        tl = np.clip(np.asarray(t_low, np.float64), 1e-6, 1.0)
        th = np.clip(np.asarray(t_high, np.float64), 1e-6, 1.0)
        a = -np.log(th)
        valid = a > 0.02
        r = np.where(valid, -np.log(tl) / np.maximum(a, 1e-9), 0.0)
        a_c = np.clip(a, self.attenuation[0], self.attenuation[-1])
        curves = np.stack([np.interp(a_c, self.attenuation, rc) for rc in self.r_curves])  # (M, ...)
        below = (r[None] > curves).sum(axis=0)
        i = np.clip(below, 1, len(self.z) - 1)
        lo = np.take_along_axis(curves, (i - 1)[None], axis=0)[0]
        hi = np.take_along_axis(curves, i[None], axis=0)[0]
        frac = np.clip((r - lo) / np.maximum(hi - lo, 1e-6), -0.5, 1.5)
        z = self.z[i - 1] + frac * (self.z[i] - self.z[i - 1])
        return np.where(valid, np.clip(z, 1.0, 90.0), 0.0).astype(np.float32)


def build_zlookup(scanner: DualEnergyScanner, materials: Sequence[str] = REFERENCE_MATERIALS) -> ZLookup:
    """Reference R curves from the scanner's own noise-free physics, for attenuation 0.02 to ~7."""
    grid = np.linspace(0.02, 7.0, 350)  # bin 0 (≤ 0.02, T_high ≥ 98%) is treated as air
    zs, curves = [], []
    for name in materials:
        mu_hi = float(scanner.mu_mm(name)[len(scanner.spectrum.energies_kev) // 2])
        thick = np.linspace(0.0, 1.0, 400) ** 2 * (9.0 / mu_hi)
        lo, hi = scanner.transmission({name: thick[None, :].astype(np.float32)})
        a = -np.log(np.clip(hi[0].astype(np.float64), 1e-12, 1.0))
        r = -np.log(np.clip(lo[0].astype(np.float64), 1e-12, 1.0)) / np.maximum(a, 1e-12)
        ok = a > 1e-4
        curves.append(np.interp(grid, a[ok], r[ok]))
        zs.append(scanner.materials[name].effective_z)
    order = np.argsort(zs)
    exact = ZLookup(grid, np.asarray(curves)[order], np.asarray(zs)[order], np.zeros((1, 1), np.float32))
    aa, rr = np.meshgrid(grid, R_GRID, indexing="ij")
    # T_low, T_high that give attenuation aa and ratio rr, so the exact path fills the table.
    table = exact.effective_z(np.exp(-aa * rr), np.exp(-aa))
    return ZLookup(exact.attenuation, exact.r_curves, exact.z, table.astype(np.float32))


def flat_field(raw: RawScan, dark: RawScan, air: RawScan) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``T = (I - dark) / (air - dark)`` per channel and energy, from mean reference lines."""
    out = []
    for img, d, a in ((raw.low, dark.low, air.low), (raw.high, dark.high, air.high)):
        dm = d.astype(np.float32).mean(axis=0)
        am = a.astype(np.float32).mean(axis=0)
        t = (img.astype(np.float32) - dm) / np.maximum(am - dm, 1.0)
        out.append(np.clip(t, 0.0, 1.2).astype(np.float32))
    return out[0], out[1]


def pseudo_colour(t_low: NDArray[np.floating], t_high: NDArray[np.floating], lookup: ZLookup,
                  organic_max_z: float = 10.0, metal_min_z: float = 18.0,
                  impenetrable_t_high: float = 0.015, table: NDArray[np.uint8] | None = None) -> NDArray[np.uint8]:
    """``(H, W, 3) uint8`` BGR preview: hue by Z class, lightness by attenuation, impenetrable black.

    Implemented as one gather from a colour table over the (attenuation, R) grid of ``lookup``; pass a
    ``table`` from :func:`colour_table` to skip rebuilding it per image (the thresholds are then the table's).
    """
    if table is None:
        table = colour_table(lookup, organic_max_z, metal_min_z, impenetrable_t_high)
    ia, ir = lookup.bins(t_low, t_high)
    return table[ia, ir]


def colour_table(lookup: ZLookup, organic_max_z: float = 10.0, metal_min_z: float = 18.0,
                 impenetrable_t_high: float = 0.015) -> NDArray[np.uint8]:
    """``(A, R, 3) uint8`` colour of every (attenuation, R) bin of ``lookup``."""
    a = lookup.attenuation[:, None].astype(np.float32) * np.ones((1, len(R_GRID)), np.float32)
    th = np.exp(-a)
    z = lookup.table
    # Class weights with soft 1.5-Z transitions so overlaps blend as on vendor displays.
    w_org = np.clip((organic_max_z + 0.75 - z) / 1.5, 0.0, 1.0)
    w_met = np.clip((z - metal_min_z + 0.75) / 1.5, 0.0, 1.0)
    w_mix = np.clip(1.0 - w_org - w_met, 0.0, 1.0)
    orange = np.array([0.10, 0.55, 1.00], np.float32)  # BGR
    green = np.array([0.15, 0.80, 0.25], np.float32)
    blue = np.array([1.00, 0.45, 0.10], np.float32)
    hue = w_org[..., None] * orange + w_mix[..., None] * green + w_met[..., None] * blue
    sat = np.clip(a / 0.35, 0.0, 1.0)[..., None]  # thin material: pale; a little attenuation: full colour
    light = (0.12 + 0.88 * th**0.55)[..., None]
    rgb = ((1.0 - sat) + sat * hue) * light
    rgb[th < impenetrable_t_high] = 0.0
    rgb[0] = 1.0  # the first attenuation bin is air: white
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
