"""Dual-energy line-scan physics of the virtual scanner: materials, spectrum, sandwich detector, raw counts.

Where it sits: the bottom of ``sim/``. Scenes (``sim/scene.py``), step wedges (``sim/wedge.py``) and the
calibration target (``sim/target.py``) describe an item as per-material path-length maps; this module turns
those maps into what a real scanner would deliver: 16-bit raw low- and high-energy lines before flat-field
correction. The facts it stands on are in ``PHYSICS.md``.

Public entry points:

- ``MATERIALS``: name → :class:`Material` (formula/mixture, density, power-law effective Z, ``mu_cm(E)`` from
  xraydb's reference attenuation data).
- :class:`ScannerSpec`: geometry, tube, detector and electronics of one scanner (frozen, all configurable).
- :class:`DualEnergyScanner`: ``transmission(path_mm)`` → noise-free ``(t_low, t_high)``;
  ``render(path_mm, rng)`` → :class:`RawScan` (detector blur, Poisson quanta, dark level, per-channel
  gain/offset with module steps, read noise, 16-bit clipping); ``counts(t_low, t_high, rng)`` (the noise and
  electronics half alone); ``dark_lines(n, rng)`` and ``air_lines(n, rng)`` for flat-field references;
  ``spectrum`` (bin energies and per-layer weights) and ``mu_mm(name)`` for consumers that model the physics.
- :func:`effective_z_map`: true per-pixel effective Z of overlapping materials (ground truth).

Conventions: arrays are ``(H, W)`` with columns = detector channels and rows = belt lines (row 0 = first line
of the item). Path-length maps are in millimetres.

Model (PHYSICS.md): ``T(E) = exp(-Σ μ_m(E) t_m)``; a dual-layer detector with a thin front scintillator
(``η_low = 1 - exp(-μ_s d_f)``), a copper filter and a thick back scintillator
(``η_high = exp(-μ_s d_f) exp(-μ_Cu d_Cu) (1 - exp(-μ_s d_b))``); energy-integrating signal
``S_k = Σ_E Φ(E) T(E) η_k(E) E``. The spectrum comes from spekpy (tungsten anode, inherent + Al filtration),
condensed to 7 keV bins (20 bins from 10 to 150 keV at 150 kVp), each bin evaluated at its signal-weighted mean
energy. Quantum noise is Poisson in a per-layer quanta budget (Swank factor ignored: documented approximation;
above 64 quanta drawn as the equal-variance Gaussian for speed).

Speed: ``transmission`` is two small matrix products per 65k-pixel chunk. Run it with one BLAS thread per
process when parallelising over processes (``sim/dataset.py`` does): BLAS threads fighting over two cores made
it 4x slower in measurement.

Must not: import torch or anything from ``edge/`` internals; do I/O at import time (xraydb and spekpy are
imported and queried only when a scanner is built or ``mu_cm`` is called).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from sim import require_sim_extra

FloatArray = NDArray[np.float32]
U16Array = NDArray[np.uint16]

POWER_LAW_EXPONENT: Final = 2.94

# Atomic number and standard atomic weight of every element the material library uses. Kept here (rather than
# asked from xraydb) so that effective Z is known without touching xraydb's database at import time.
_ELEMENTS: Final[dict[str, tuple[int, float]]] = {
    "H": (1, 1.008), "Li": (3, 6.94), "B": (5, 10.81), "C": (6, 12.011), "N": (7, 14.007), "O": (8, 15.999),
    "F": (9, 18.998), "Na": (11, 22.990), "Mg": (12, 24.305), "Al": (13, 26.982), "Si": (14, 28.085),
    "P": (15, 30.974), "S": (16, 32.06), "Cl": (17, 35.45), "K": (19, 39.098), "Ca": (20, 40.078),
    "Ti": (22, 47.867), "Cr": (24, 51.996), "Mn": (25, 54.938), "Fe": (26, 55.845), "Co": (27, 58.933),
    "Ni": (28, 58.693), "Cu": (29, 63.546), "Zn": (30, 65.38), "Br": (35, 79.904), "Sn": (50, 118.71),
    "I": (53, 126.90), "Cs": (55, 132.91), "W": (74, 183.84), "Pb": (82, 207.2),
}

_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*\.?\d*)")


def parse_formula(formula: str) -> dict[str, float]:
    """Atom counts of a simple chemical formula such as ``C6H10O5`` (no brackets).

    Raises:
        ValueError: on an unknown element or text that is not a formula.
    """
    counts: dict[str, float] = {}
    pos = 0
    for match in _TOKEN.finditer(formula):
        if match.start() != pos:
            break
        symbol, number = match.group(1), match.group(2)
        if symbol not in _ELEMENTS:
            raise ValueError(f"formula {formula!r}: unknown element {symbol!r}; known: {sorted(_ELEMENTS)}")
        counts[symbol] = counts.get(symbol, 0.0) + (float(number) if number else 1.0)
        pos = match.end()
    if pos != len(formula) or not counts:
        raise ValueError(f"formula {formula!r} is not a plain formula like 'C6H10O5'")
    return counts


def element_mass_fractions(composition: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Mass fraction of each element in a mixture of formulas given by mass fraction (normalised to 1)."""
    total_w = sum(w for _, w in composition)
    out: dict[str, float] = {}
    for formula, w in composition:
        atoms = parse_formula(formula)
        mass = sum(n * _ELEMENTS[el][1] for el, n in atoms.items())
        for el, n in atoms.items():
            out[el] = out.get(el, 0.0) + (w / total_w) * n * _ELEMENTS[el][1] / mass
    return out


def power_law_effective_z(composition: Sequence[tuple[str, float]]) -> float:
    """``Z_eff = (Σ f_i Z_i^2.94)^(1/2.94)`` with f_i the electron fractions (PHYSICS.md)."""
    fractions = element_mass_fractions(composition)
    electrons = {el: w * _ELEMENTS[el][0] / _ELEMENTS[el][1] for el, w in fractions.items()}
    total = sum(electrons.values())
    acc = sum((e / total) * _ELEMENTS[el][0] ** POWER_LAW_EXPONENT for el, e in electrons.items())
    return float(acc ** (1.0 / POWER_LAW_EXPONENT))


def electrons_per_gram(composition: Sequence[tuple[str, float]]) -> float:
    """Electrons per gram divided by Avogadro's number (mol e⁻ / g); weights the per-pixel Z_eff of overlaps."""
    fractions = element_mass_fractions(composition)
    return float(sum(w * _ELEMENTS[el][0] / _ELEMENTS[el][1] for el, w in fractions.items()))


@dataclass(frozen=True, slots=True)
class Material:
    """A material as the physics sees it.

    Attributes:
        name: key in ``MATERIALS``.
        composition: ``((formula, mass_fraction), ...)``; one entry for a compound, several for a mixture.
        density_g_cm3: bulk density of the solid material. Scenes model porous fills (folded clothes,
            corrugated board) by scaling path lengths, not by a second density.
        description: what the material stands for.
        effective_z: power-law (2.94) effective atomic number, computed from ``composition``.
    """

    name: str
    composition: tuple[tuple[str, float], ...]
    density_g_cm3: float
    description: str = ""
    effective_z: float = field(init=False)
    electron_density_mol_cm3: float = field(init=False)

    def __post_init__(self) -> None:
        if self.density_g_cm3 <= 0:
            raise ValueError(f"material {self.name!r}: density must be > 0, got {self.density_g_cm3}")
        if not self.composition or any(w <= 0 for _, w in self.composition):
            raise ValueError(f"material {self.name!r}: composition needs positive mass fractions")
        object.__setattr__(self, "effective_z", power_law_effective_z(self.composition))
        object.__setattr__(
            self, "electron_density_mol_cm3", electrons_per_gram(self.composition) * self.density_g_cm3
        )

    @property
    def formula(self) -> str:
        """The formula (compound) or a readable mixture description such as ``0.65 Cu + 0.35 Zn``."""
        if len(self.composition) == 1:
            return self.composition[0][0]
        return " + ".join(f"{w:g} {f}" for f, w in self.composition)

    def mu_cm(self, energies_kev: NDArray[np.floating] | Sequence[float]) -> NDArray[np.float64]:
        """Linear attenuation coefficient in 1/cm at the given energies (keV), from xraydb (Elam et al.)."""
        require_sim_extra()
        import xraydb  # local import: reads its database; keep module import free of I/O

        energies_ev = np.asarray(energies_kev, dtype=np.float64) * 1000.0
        total_w = sum(w for _, w in self.composition)
        mass_mu = np.zeros_like(energies_ev)
        for formula, w in self.composition:
            mass_mu += (w / total_w) * np.asarray(xraydb.material_mu(formula, energies_ev, density=1.0))
        return mass_mu * self.density_g_cm3


def _m(name: str, composition: Sequence[tuple[str, float]], density: float, description: str) -> Material:
    return Material(name, tuple(composition), density, description)


MATERIALS: Final[Mapping[str, Material]] = {
    m.name: m
    for m in (
        # Organics (Z_eff ~ 6-8)
        _m("water", [("H2O", 1.0)], 1.00, "water, drinks, gels"),
        _m("ethanol", [("C2H6O", 1.0)], 0.79, "spirits, perfume base"),
        _m("oil", [("C57H104O6", 1.0)], 0.91, "vegetable oil (triolein)"),
        _m("sugar", [("C12H22O11", 1.0)], 1.59, "sucrose: sweets, marzipan-like food"),
        _m("food", [("C12H22O11", 0.35), ("H2O", 0.35), ("C57H104O6", 0.2), ("NaCl", 0.02), ("C6H10O5", 0.08)],
           1.15, "mixed food: cheese, chocolate, spreads"),
        _m("cellulose", [("C6H10O5", 1.0)], 1.50, "solid cellulose, wood-like"),
        _m("wood", [("C6H10O5", 1.0)], 0.60, "dry wood"),
        _m("paper", [("C6H10O5", 0.9), ("CaCO3", 0.1)], 0.90, "printed paper with mineral filler"),
        _m("cardboard", [("C6H10O5", 0.95), ("CaCO3", 0.05)], 0.70, "solid board; corrugation is a path scale"),
        _m("cotton", [("C6H10O5", 1.0)], 1.54, "cotton fibre"),
        _m("polyester", [("C10H8O4", 1.0)], 1.38, "PET fibre and bottles"),
        _m("leather", [("C5H9NO2", 0.95), ("Cr2O3", 0.05)], 0.95, "chrome-tanned leather"),
        _m("pe", [("C2H4", 1.0)], 0.94, "polyethylene"),
        _m("pp", [("C3H6", 1.0)], 0.90, "polypropylene"),
        _m("pvc", [("C2H3Cl", 1.0)], 1.38, "polyvinyl chloride: cable insulation"),
        _m("pom", [("CH2O", 1.0)], 1.41, "polyoxymethylene (Delrin): calibration wedges"),
        _m("abs", [("C15H17N", 1.0)], 1.05, "ABS: electronics housings, toys"),
        _m("nylon", [("C6H11NO", 1.0)], 1.14, "polyamide"),
        _m("rubber", [("C5H8", 0.88), ("C", 0.1), ("ZnO", 0.02)], 1.10, "filled rubber: soles, tyres"),
        _m("cosmetic", [("H2O", 0.6), ("C57H104O6", 0.3), ("C3H8O3", 0.08), ("TiO2", 0.02)], 1.00,
           "creams and lotions"),
        _m("organic_block", [("C6H11NO", 0.7), ("C3H8O3", 0.3)], 1.60, "dense organic block (concealment)"),
        # Light inorganics / mixed (Z_eff ~ 10-16)
        _m("glass", [("SiO2", 0.72), ("Na2O", 0.14), ("CaO", 0.10), ("MgO", 0.04)], 2.50, "soda-lime glass"),
        _m("ceramic", [("Al2O3", 0.9), ("SiO2", 0.1)], 3.60, "alumina ceramic: heating-element formers"),
        _m("salt", [("NaCl", 1.0)], 2.16, "table salt"),
        _m("aluminium", [("Al", 1.0)], 2.70, "aluminium"),
        _m("fr4", [("SiO2", 0.35), ("CaO", 0.12), ("Al2O3", 0.08), ("C18H20O3", 0.42), ("Br", 0.03)], 1.85,
           "FR4 printed-circuit substrate (glass fibre + brominated epoxy)"),
        _m("pcb", [("SiO2", 0.30), ("CaO", 0.10), ("Al2O3", 0.07), ("C18H20O3", 0.36), ("Br", 0.03),
                   ("Cu", 0.14)], 2.05, "populated circuit board (FR4 + copper layers and parts)"),
        _m("li_ion", [("CoLiO2", 0.30), ("C", 0.18), ("Cu", 0.14), ("Al", 0.08), ("C3H4O3", 0.13),
                      ("LiPF6", 0.03), ("C2H4", 0.04), ("Fe", 0.10)], 2.60,
           "lithium-ion cell stack: cathode, graphite, Cu/Al foils, electrolyte, separator, can"),
        # Metals (Z_eff >= 22)
        _m("titanium", [("Ti", 1.0)], 4.51, "titanium"),
        _m("zinc", [("Zn", 1.0)], 7.14, "zinc die-cast"),
        _m("steel", [("Fe", 0.98), ("C", 0.005), ("Mn", 0.015)], 7.85, "carbon steel"),
        _m("stainless", [("Fe", 0.72), ("Cr", 0.18), ("Ni", 0.10)], 7.90, "stainless steel (304): blades"),
        _m("tinplate", [("Fe", 0.99), ("Sn", 0.01)], 7.85, "tinplate: food tins"),
        _m("nickel", [("Ni", 1.0)], 8.90, "nickel"),
        _m("brass", [("Cu", 0.65), ("Zn", 0.35)], 8.50, "brass: keys, cartridges"),
        _m("copper", [("Cu", 1.0)], 8.96, "copper: cables, coils"),
        _m("tin", [("Sn", 1.0)], 7.29, "tin"),
        _m("tungsten", [("W", 1.0)], 19.3, "tungsten"),
        _m("lead", [("Pb", 1.0)], 11.35, "lead"),
    )
}


def material(name: str, materials: Mapping[str, Material] = MATERIALS) -> Material:
    """Look a material up by name, with a helpful error."""
    try:
        return materials[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(materials), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown material {name!r}{hint}; known: {', '.join(sorted(materials))}") from None


@dataclass(frozen=True, slots=True)
class ScannerSpec:
    """One scanner's geometry, tube, detector and electronics. Defaults: a 150 kVp parcel scanner.

    Attributes:
        kvp: tube voltage (kV).
        anode_angle_deg: tungsten anode angle for spekpy.
        al_filter_mm: aluminium-equivalent filtration (tube window, tunnel wall, belt).
        channels: detector channels per energy (image columns).
        module_channels: channels per detector board; gain steps happen at board seams.
        pitch_mm: channel pitch = belt travel per line (square pixels).
        belt_speed_mm_s: belt speed; lines per second = belt_speed_mm_s / pitch_mm.
        photons_air_low, photons_air_high: mean detected quanta per pixel per line in air, per layer. They set
            the quantum noise: the relative noise of a pixel is ``1 / sqrt(photons * T)``.
        scintillator: formula of both scintillator layers (CsI).
        scintillator_density_g_cm3: its density.
        front_scintillator_mm, back_scintillator_mm: layer thicknesses.
        cu_filter_mm: copper filter between the layers.
        dark_level: mean ADC counts with the beam off.
        air_level: mean ADC counts in air (before gain non-uniformity).
        gain_sigma: per-channel relative gain spread.
        module_gain_sigma: per-module relative gain spread (visible steps at module seams).
        offset_sigma: per-channel dark-offset spread in counts.
        read_noise: Gaussian electronic noise per sample in counts.
        psf_sigma_px: Gaussian blur of the signal (scintillator light spread, focal spot), in pixels; 0 = none.
        energy_bin_kev, min_energy_kev: spectrum condensation (7 keV bins from 10 keV up to kVp).
    """

    kvp: float = 150.0
    anode_angle_deg: float = 12.0
    al_filter_mm: float = 2.5
    channels: int = 640
    module_channels: int = 64
    pitch_mm: float = 0.8
    belt_speed_mm_s: float = 200.0
    photons_air_low: float = 20_000.0
    photons_air_high: float = 30_000.0
    scintillator: str = "CsI"
    scintillator_density_g_cm3: float = 4.51
    front_scintillator_mm: float = 0.3
    back_scintillator_mm: float = 4.0
    cu_filter_mm: float = 0.6
    dark_level: float = 300.0
    air_level: float = 55_000.0
    gain_sigma: float = 0.01
    module_gain_sigma: float = 0.04
    offset_sigma: float = 20.0
    read_noise: float = 6.0
    psf_sigma_px: float = 0.6
    energy_bin_kev: float = 7.0
    min_energy_kev: float = 10.0

    def __post_init__(self) -> None:
        problems = []
        if not 40.0 <= self.kvp <= 450.0:
            problems.append(f"kvp={self.kvp}: expected 40 to 450 kV")
        if self.channels < 1 or self.module_channels < 1:
            problems.append("channels and module_channels must be >= 1")
        if self.pitch_mm <= 0 or self.belt_speed_mm_s <= 0:
            problems.append("pitch_mm and belt_speed_mm_s must be > 0")
        if self.photons_air_low <= 0 or self.photons_air_high <= 0:
            problems.append("photons_air_low/high must be > 0")
        if not 0 <= self.dark_level < self.air_level <= 65535:
            problems.append(f"need 0 <= dark_level ({self.dark_level}) < air_level ({self.air_level}) <= 65535")
        if self.min_energy_kev >= self.kvp or self.energy_bin_kev <= 0:
            problems.append("need energy_bin_kev > 0 and min_energy_kev < kvp")
        if problems:
            raise ValueError("invalid ScannerSpec: " + "; ".join(problems))

    @property
    def line_rate_hz(self) -> float:
        """Detector lines per second (one line per pitch of belt travel)."""
        return self.belt_speed_mm_s / self.pitch_mm

    @property
    def width_mm(self) -> float:
        """Width of the detector line across the belt."""
        return self.channels * self.pitch_mm


@dataclass(frozen=True, slots=True)
class RawScan:
    """Raw detector output of one item (or of reference lines), before flat-field correction.

    Attributes:
        low: ``(H, W) uint16`` front-layer (low-energy) counts; rows = belt lines, columns = channels.
        high: ``(H, W) uint16`` back-layer (high-energy) counts.
    """

    low: U16Array
    high: U16Array

    def __post_init__(self) -> None:
        if self.low.dtype != np.uint16 or self.high.dtype != np.uint16:
            raise ValueError(f"RawScan needs uint16 arrays, got {self.low.dtype}/{self.high.dtype}")
        if self.low.ndim != 2 or self.low.shape != self.high.shape:
            raise ValueError(f"RawScan low/high must be equal (H, W), got {self.low.shape}/{self.high.shape}")
        self.low.flags.writeable = False
        self.high.flags.writeable = False

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.low.shape[0]), int(self.low.shape[1]))


@dataclass(frozen=True, slots=True)
class Spectrum:
    """The condensed spectral model: per-bin energy and per-layer signal weights (normalised to 1 in air).

    Attributes:
        energies_kev: ``(E,)`` representative energy of each bin.
        weights: ``(E, 2)`` fraction of the air signal of the [low, high] layer carried by each bin.
        mean_energy_low_kev, mean_energy_high_kev: signal-weighted mean energies (a sanity figure).
    """

    energies_kev: NDArray[np.float64]
    weights: NDArray[np.float64]

    @property
    def mean_energy_low_kev(self) -> float:
        return float(np.sum(self.energies_kev * self.weights[:, 0]))

    @property
    def mean_energy_high_kev(self) -> float:
        return float(np.sum(self.energies_kev * self.weights[:, 1]))


def build_spectrum(spec: ScannerSpec) -> Spectrum:
    """Tube spectrum (spekpy) x detector layer response x energy, condensed to ``energy_bin_kev`` bins."""
    require_sim_extra()
    import spekpy
    import xraydb

    tube = spekpy.Spek(kvp=spec.kvp, th=spec.anode_angle_deg)
    if spec.al_filter_mm > 0:
        tube.filter("Al", spec.al_filter_mm)
    energy, fluence = tube.get_spectrum()
    energy = np.asarray(energy, dtype=np.float64)
    fluence = np.asarray(fluence, dtype=np.float64)
    keep = energy >= spec.min_energy_kev
    energy, fluence = energy[keep], fluence[keep]
    e_ev = energy * 1000.0
    mu_s = np.asarray(xraydb.material_mu(spec.scintillator, e_ev, density=spec.scintillator_density_g_cm3))
    mu_cu = np.asarray(xraydb.material_mu("Cu", e_ev, density=8.96))
    front = np.exp(-mu_s * spec.front_scintillator_mm / 10.0)
    eta_low = 1.0 - front
    back = 1.0 - np.exp(-mu_s * spec.back_scintillator_mm / 10.0)
    eta_high = front * np.exp(-mu_cu * spec.cu_filter_mm / 10.0) * back
    signal = np.stack([fluence * energy * eta_low, fluence * energy * eta_high], axis=1)  # (Efine, 2)
    edges = np.arange(spec.min_energy_kev, spec.kvp + spec.energy_bin_kev, spec.energy_bin_kev)
    bins = np.clip(np.digitize(energy, edges) - 1, 0, len(edges) - 2)
    energies, weights = [], []
    for b in range(len(edges) - 1):
        sel = bins == b
        total = signal[sel].sum(axis=0)
        if not sel.any() or total.sum() <= 0:
            continue
        both = signal[sel].sum(axis=1)
        energies.append(float(np.sum(energy[sel] * both) / both.sum()))
        weights.append(total)
    w = np.asarray(weights)
    return Spectrum(np.asarray(energies), w / w.sum(axis=0, keepdims=True))


def effective_z_map(
    path_mm: Mapping[str, NDArray[np.floating]], materials: Mapping[str, Material] = MATERIALS
) -> FloatArray:
    """True per-pixel effective Z of everything crossed (power law over electron fractions); 0 where empty.

    Overlapping materials combine by their electrons along the ray: ``f_m ∝ n_e,m · t_m``.
    """
    shape = _common_shape(path_mm)
    num = np.zeros(shape, np.float32)
    den = np.zeros(shape, np.float32)
    for name, path in path_mm.items():
        mat = material(name, materials)
        electrons = np.float32(mat.electron_density_mol_cm3) * np.asarray(path, np.float32)
        num += electrons * np.float32(mat.effective_z**POWER_LAW_EXPONENT)
        den += electrons
    out = np.zeros(shape, np.float32)
    nz = den > 0
    out[nz] = (num[nz] / den[nz]) ** np.float32(1.0 / POWER_LAW_EXPONENT)
    return out


def _common_shape(path_mm: Mapping[str, NDArray[np.floating]]) -> tuple[int, int]:
    if not path_mm:
        raise ValueError("path_mm is empty: give at least one material map (use zeros for an empty belt)")
    shapes = {np.shape(p) for p in path_mm.values()}
    if len(shapes) != 1:
        raise ValueError(f"path-length maps differ in shape: {sorted(shapes)}")
    shape = shapes.pop()
    if len(shape) != 2:
        raise ValueError(f"path-length maps must be (H, W), got shape {shape}")
    return (int(shape[0]), int(shape[1]))


class DualEnergyScanner:
    """A dual-energy line scanner: path lengths in, noise-free transmission or raw 16-bit counts out.

    The fixed-pattern non-uniformity (per-channel gain with per-module steps, per-channel offset) is drawn once
    from ``seed``, as a real detector's is fixed at manufacture; flat-field correction with this scanner's own
    dark and air lines removes it. Per-scan noise comes from the ``rng`` passed to each call.
    """

    def __init__(self, spec: ScannerSpec | None = None, seed: int = 0,
                 materials: Mapping[str, Material] = MATERIALS) -> None:
        self.spec = spec if spec is not None else ScannerSpec()
        self.materials = materials
        self.spectrum = build_spectrum(self.spec)
        energies = self.spectrum.energies_kev
        self._names = list(materials)
        self._index = {n: i for i, n in enumerate(self._names)}
        # μ in 1/mm on the condensed energy grid, one row per material.
        self._mu_mm = np.stack([materials[n].mu_cm(energies) / 10.0 for n in self._names]).astype(np.float32)
        self._weights = self.spectrum.weights.astype(np.float32)  # (E, 2)
        fixed = np.random.default_rng(np.random.SeedSequence([seed, 0x5CA7]))
        w, m = self.spec.channels, self.spec.module_channels
        n_modules = -(-w // m)
        module_gain = 1.0 + fixed.normal(0.0, self.spec.module_gain_sigma, size=(2, n_modules))
        channel_gain = 1.0 + fixed.normal(0.0, self.spec.gain_sigma, size=(2, w))
        self.gain = (np.repeat(module_gain, m, axis=1)[:, :w] * channel_gain).astype(np.float32)
        """``(2, W)`` relative gain of [low, high] per channel."""
        self.offset = fixed.normal(0.0, self.spec.offset_sigma, size=(2, w)).astype(np.float32)
        """``(2, W)`` dark offset of [low, high] per channel, in counts, added to ``dark_level``."""

    def mu_mm(self, name: str) -> NDArray[np.float32]:
        """``(E,)`` linear attenuation of a material in 1/mm on this scanner's energy grid."""
        material(name, self.materials)
        return self._mu_mm[self._index[name]]

    def transmission(self, path_mm: Mapping[str, NDArray[np.floating]]) -> tuple[FloatArray, FloatArray]:
        """Noise-free energy-integrated transmission ``(t_low, t_high)``, each ``(H, W) float32`` in (0, 1].

        Only pixels crossed by some material are evaluated (air stays exactly 1), and the material sum is a
        small matrix product over the materials present, so a 640-channel parcel takes tens of milliseconds.

        Raises:
            KeyError: an unknown material name.
            ValueError: maps of different shapes, not 2-D, or negative path lengths.
        """
        shape = _common_shape(path_mm)
        names = list(path_mm)
        for n in names:
            material(n, self.materials)
        flat = [np.asarray(path_mm[n], np.float32).reshape(-1) for n in names]
        support = np.zeros(flat[0].shape, bool)
        for name, f in zip(names, flat, strict=True):
            if f.size and (f.min() < 0 or not np.isfinite(f).all()):
                raise ValueError(f"path lengths must be finite and >= 0 mm (material {name!r})")
            support |= f > 0
        t = np.ones((2, flat[0].size), np.float32)
        mu_t = np.ascontiguousarray(self._mu_mm[[self._index[n] for n in names]].T)  # (E, M)
        w_t = np.ascontiguousarray(self._weights.T)  # (2, E)
        chunk = 65_536
        # Layout (E, P): the long pixel axis is BLAS's fast axis, and stacking material rows is a plain copy.
        if support.mean() > 0.5:
            # Mostly material: contiguous chunks (no gather); air pixels are reset to exactly 1 afterwards.
            for start in range(0, flat[0].size, chunk):
                sl = slice(start, start + chunk)
                att = mu_t @ np.stack([f[sl] for f in flat])  # (E, P) optical depth
                np.negative(att, out=att)
                np.exp(att, out=att)
                t[:, sl] = w_t @ att
            t[:, ~support] = 1.0
        else:
            idx = np.flatnonzero(support)
            for start in range(0, idx.size, chunk):
                sel = idx[start:start + chunk]
                att = mu_t @ np.stack([f[sel] for f in flat])
                np.negative(att, out=att)
                np.exp(att, out=att)
                t[:, sel] = w_t @ att
        t_low = t[0].reshape(shape)
        t_high = t[1].reshape(shape)
        return t_low, t_high

    def render(self, path_mm: Mapping[str, NDArray[np.floating]], rng: np.random.Generator) -> RawScan:
        """Raw 16-bit counts: detector blur, Poisson quanta, dark level, fixed-pattern gain/offset, read noise.

        The width of the maps must equal ``spec.channels`` (columns are detector channels).
        """
        t_low, t_high = self.transmission(path_mm)
        if self.spec.psf_sigma_px > 0:
            sigma = self.spec.psf_sigma_px
            t_low = np.asarray(cv2.GaussianBlur(t_low, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE), np.float32)
            t_high = np.asarray(cv2.GaussianBlur(t_high, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE), np.float32)
        return self.counts(t_low, t_high, rng)

    def counts(self, t_low: NDArray[np.floating], t_high: NDArray[np.floating], rng: np.random.Generator) -> RawScan:
        """Raw counts for given noise-free transmissions (the noise and electronics half of ``render``)."""
        if t_low.shape != t_high.shape or t_low.ndim != 2:
            raise ValueError(f"t_low/t_high must be equal (H, W), got {t_low.shape}/{t_high.shape}")
        if t_low.shape[1] != self.spec.channels:
            raise ValueError(f"image width {t_low.shape[1]} != scanner channels {self.spec.channels}")
        s = self.spec
        out = []
        for k, (t, photons) in enumerate(((t_low, s.photons_air_low), (t_high, s.photons_air_high))):
            mean = np.asarray(t, np.float32) * np.float32(photons)
            scale = np.float32((s.air_level - s.dark_level) / photons) * self.gain[k]  # counts per quantum
            # Quantum noise: Poisson. Above 64 quanta the Gaussian with variance = mean is indistinguishable
            # and several times faster; below it, draw exact Poisson. Read noise adds in quadrature.
            # One Gaussian draw carries quantum and read noise: var = scale² · mean + read².
            read2 = np.float32(s.read_noise**2)
            sigma = np.sqrt(scale * scale * mean + read2)
            signal = mean * scale + sigma * rng.standard_normal(size=mean.shape, dtype=np.float32)
            low = mean < 64.0
            if low.any():
                exact = rng.poisson(mean[low]).astype(np.float32) * np.broadcast_to(scale, mean.shape)[low]
                signal[low] = exact + np.float32(s.read_noise) * rng.standard_normal(int(low.sum()), np.float32)
            signal += np.float32(s.dark_level) + self.offset[k]
            out.append(np.clip(np.rint(signal), 0, 65535).astype(np.uint16))
        return RawScan(out[0], out[1])

    def dark_lines(self, n: int, rng: np.random.Generator) -> RawScan:
        """``n`` lines with the beam off (flat-field dark reference)."""
        zeros = np.zeros((n, self.spec.channels), np.float32)
        return self.counts(zeros, zeros, rng)

    def air_lines(self, n: int, rng: np.random.Generator) -> RawScan:
        """``n`` lines of empty belt (flat-field air reference)."""
        ones = np.ones((n, self.spec.channels), np.float32)
        return self.counts(ones, ones, rng)
