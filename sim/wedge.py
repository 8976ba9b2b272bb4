"""Step wedges of reference materials, rendered through the virtual scanner, with per-step truth.

Where it sits: a calibration object of ``sim/``. The commissioning step ``edge calibrate energy`` fits the
effective-Z lookup over (ln T_high, R = ln T_low / ln T_high) from a scan of such a wedge; the conditioning tests
use the truth returned here (material, Z_eff, thickness, pixel region, noise-free transmission) to check it.

Layout of the scan (rows = belt lines, columns = channels): ``lead_lines`` of empty belt, then one band per
group of materials. In a band every material is a strip ``strip_channels`` wide across the belt; along the belt
the strip steps through its thicknesses, each step ``step_lines`` long, thinnest first. Strips are separated by
``gap_channels`` of air, so each step has air beside it.

Thicknesses are chosen per material so that the steps' high-energy transmission spans ``t_high_max`` down to
``t_high_min`` (default 90% to 5%, geometrically spaced), rounded to a machinable 0.05 mm (metals) or 0.5 mm.

Must not: do I/O; it only returns arrays and records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sim.physics import DualEnergyScanner, RawScan

DEFAULT_WEDGE_MATERIALS: tuple[str, ...] = ("pe", "pom", "water", "aluminium", "steel", "copper")


@dataclass(frozen=True, slots=True)
class WedgeStep:
    """Truth for one step of one wedge.

    Attributes:
        material: material name in ``sim.physics.MATERIALS``.
        effective_z: the material's power-law effective Z.
        thickness_mm: path length through the step.
        rows: ``(start, stop)`` belt lines of the step in the scan, half-open.
        cols: ``(start, stop)`` channels of the step, half-open.
        t_low, t_high: noise-free transmission of the step.
    """

    material: str
    effective_z: float
    thickness_mm: float
    rows: tuple[int, int]
    cols: tuple[int, int]
    t_low: float
    t_high: float

    def inner(self, margin: int = 4) -> tuple[slice, slice]:
        """Index of the step's pixels away from its edges (edges mix with the neighbouring step or air)."""
        r0, r1 = self.rows
        c0, c1 = self.cols
        return (slice(r0 + margin, r1 - margin), slice(c0 + margin, c1 - margin))


@dataclass(frozen=True, slots=True)
class WedgeScan:
    """A rendered step-wedge scan.

    Attributes:
        raw: the raw counts, ``(H, W) uint16`` low and high.
        steps: one record per step, in material order then thinnest first.
        dark: dark reference lines rendered by the same scanner.
        air: air reference lines rendered by the same scanner.
        path_mm: the per-material path-length maps that were rendered, ``(H, W) float32``.
    """

    raw: RawScan
    steps: tuple[WedgeStep, ...]
    dark: RawScan
    air: RawScan
    path_mm: dict[str, NDArray[np.float32]]


def thickness_for_t_high(scanner: DualEnergyScanner, material: str, t_high: float) -> float:
    """Path length (mm) of ``material`` whose noise-free high-energy transmission is ``t_high``."""
    if not 0.0 < t_high < 1.0:
        raise ValueError(f"t_high must be in (0, 1), got {t_high}")
    lo, hi = 0.0, 1.0
    while _t_high(scanner, material, hi) > t_high:
        hi *= 2.0
        if hi > 1e5:
            raise ValueError(f"{material}: cannot reach t_high={t_high}")
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if _t_high(scanner, material, mid) > t_high:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _t_high(scanner: DualEnergyScanner, material: str, thickness_mm: float) -> float:
    _, t_high = scanner.transmission({material: np.full((1, 1), thickness_mm, np.float32)})
    return float(t_high[0, 0])


def wedge_thicknesses(
    scanner: DualEnergyScanner, material: str, n_steps: int = 8, t_high_max: float = 0.9, t_high_min: float = 0.05
) -> tuple[float, ...]:
    """``n_steps`` increasing thicknesses spanning high-energy transmission ``t_high_max`` → ``t_high_min``."""
    if n_steps < 2:
        raise ValueError("a wedge needs at least 2 steps")
    targets = np.geomspace(t_high_max, t_high_min, n_steps)
    raw = [thickness_for_t_high(scanner, material, float(t)) for t in targets]
    out: list[float] = []
    for t in raw:
        quantum = 0.05 if t < 10 else 0.5
        value = max(quantum, round(t / quantum) * quantum)
        if out and value <= out[-1]:
            value = out[-1] + quantum
        out.append(round(value, 3))
    return tuple(out)


def render_wedge(
    scanner: DualEnergyScanner,
    rng: np.random.Generator,
    materials: Sequence[str] = DEFAULT_WEDGE_MATERIALS,
    n_steps: int = 8,
    step_lines: int = 40,
    strip_channels: int = 48,
    gap_channels: int = 24,
    lead_lines: int = 32,
    reference_lines: int = 64,
    thicknesses: dict[str, Sequence[float]] | None = None,
) -> WedgeScan:
    """Render step wedges of ``materials`` and return the scan with per-step truth.

    Args:
        thicknesses: optional explicit thicknesses per material (mm); the others are chosen automatically.

    Raises:
        ValueError: a strip does not fit across the detector.
    """
    channels = scanner.spec.channels
    pitch = strip_channels + gap_channels
    per_band = (channels - gap_channels) // pitch
    if per_band < 1:
        raise ValueError(f"a {strip_channels}-channel strip plus gaps does not fit {channels} channels")
    steps_of = {
        m: tuple(thicknesses[m]) if thicknesses and m in thicknesses else wedge_thicknesses(scanner, m, n_steps)
        for m in materials
    }
    bands = [list(materials[i:i + per_band]) for i in range(0, len(materials), per_band)]
    band_lines = [max(len(steps_of[m]) for m in band) * step_lines + lead_lines for band in bands]
    height = lead_lines + sum(band_lines)
    path = {m: np.zeros((height, channels), np.float32) for m in materials}
    records: list[WedgeStep] = []
    row0 = lead_lines
    for band, lines in zip(bands, band_lines, strict=True):
        for j, m in enumerate(band):
            c0 = gap_channels + j * pitch
            for k, t in enumerate(steps_of[m]):
                r0 = row0 + k * step_lines
                path[m][r0:r0 + step_lines, c0:c0 + strip_channels] = t
                records.append(
                    WedgeStep(m, scanner.materials[m].effective_z, float(t), (r0, r0 + step_lines),
                              (c0, c0 + strip_channels), 0.0, 0.0)
                )
        row0 += lines
    # Noise-free truth per step, computed once for all steps in a single small call.
    probe = {m: np.zeros((1, len(records)), np.float32) for m in materials}
    for i, st in enumerate(records):
        probe[st.material][0, i] = st.thickness_mm
    t_low, t_high = scanner.transmission(probe)
    steps = tuple(
        WedgeStep(st.material, st.effective_z, st.thickness_mm, st.rows, st.cols, float(t_low[0, i]),
                  float(t_high[0, i]))
        for i, st in enumerate(records)
    )
    raw = scanner.render(path, rng)
    return WedgeScan(raw, steps, scanner.dark_lines(reference_lines, rng), scanner.air_lines(reference_lines, rng),
                     path)
