"""Effective atomic number from dual-energy transmission: the calibrated R-curves and the fast 2-D lookup.

Where it sits: conditioning (``edge.condition.conditioner``) after the flat-field. ``edge calibrate energy``
(``calib.energy``) fits one R-curve per reference material of a step-wedge scan and stores them in
``energy.yaml``; this module turns the curves into a dense grid over (high-energy attenuation ``a = -ln T_high``,
``R = ln T_low / ln T_high``) once at start-up, and looks every pixel up with one ``cv2.remap``.

The model between the curves (why it is not a plain interpolation): at one attenuation, each pixel behaves
like one effective energy per layer, where ``μ(E) ∝ σ_Compton(E) + k Z^p / E^3`` per electron (p = 2.94, the
exponent that also defines the power-law Z_eff in PHYSICS.md). The ratio of two such sums is a Möbius function
of ``x = Z^p``::

    R(x) = (α + β x) / (1 + γ x)        ⇒        x = (R - α) / (β - γ R)

so at each attenuation the three numbers α, β, γ are fitted (least squares, linear in them) to the reference
curves, and any R inverts in closed form. It saturates towards high Z as real R-curves do, which is what
keeps titanium right between aluminium and steel; beam hardening is carried by α, β, γ varying with ``a``.

Must not: refit anything at run time, or read files other than the calibration it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.condition.calfile import read_yaml_mapping, require
from edge.condition.flatfield import T_FLOOR
from edge.errors import CalibrationError

FORMAT_VERSION = 1
POWER_LAW_EXPONENT = 2.94
Z_MIN = 1.0
Z_MAX = 60.0
"""Effective Z is clamped to ``[Z_MIN, Z_MAX]`` wherever there is material; air is exactly 0."""

F64 = NDArray[np.float64]
F32 = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class RCurve:
    """One reference material's ``R`` as a function of high-energy attenuation ``a``.

    Attributes:
        material: reference material name (as in the wedge description).
        effective_z: its known effective Z (power law, PHYSICS.md).
        coeffs: polynomial in ``ln a`` (highest power first, ``numpy.polyval`` order) giving ``R``.
        a_min, a_max: the attenuation range the curve was fitted on; outside it the curve is held constant
            (no polynomial extrapolation).
        rms_residual_r: RMS of ``R`` residuals of the fit on its steps.
        steps: number of wedge steps fitted.
    """

    material: str
    effective_z: float
    coeffs: tuple[float, ...]
    a_min: float
    a_max: float
    rms_residual_r: float = 0.0
    steps: int = 0

    def __post_init__(self) -> None:
        if not self.coeffs:
            raise ValueError(f"{self.material}: R-curve needs coefficients")
        if not 0.0 < self.a_min <= self.a_max:
            raise ValueError(f"{self.material}: need 0 < a_min <= a_max, got {self.a_min}, {self.a_max}")
        if not 0.0 < self.effective_z <= 100.0:
            raise ValueError(f"{self.material}: effective_z {self.effective_z} outside (0, 100]")

    def r_at(self, a: F64) -> F64:
        """R of this material at attenuations ``a`` (clamped to the fitted range)."""
        la = np.log(np.clip(a, self.a_min, self.a_max))
        return np.asarray(np.polyval(np.asarray(self.coeffs), la), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class EnergyCalibration:
    """The stored effective-Z calibration: reference R-curves and how well they fit.

    Attributes:
        curves: at least three reference materials of different Z (three numbers are fitted per attenuation).
        exponent: power-law exponent p of the Z model.
        air_t_high: above this high-energy transmission a pixel is air (Z = 0).
        fit_error_z_rms, fit_error_z_max: effective-Z error of the lookup on the fitted steps themselves.
        captured_wall: UNIX time of the calibration; source: what it was fitted from.
    """

    curves: tuple[RCurve, ...]
    exponent: float = POWER_LAW_EXPONENT
    air_t_high: float = 0.97
    fit_error_z_rms: float = 0.0
    fit_error_z_max: float = 0.0
    captured_wall: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        zs = sorted({round(c.effective_z, 3) for c in self.curves})
        if len(zs) < 3:
            raise ValueError(f"need reference materials of at least 3 different Z, got {zs}")
        if not 0.5 < self.air_t_high < 1.0:
            raise ValueError(f"air_t_high must be in (0.5, 1), got {self.air_t_high}")
        if not 1.0 <= self.exponent <= 5.0:
            raise ValueError(f"exponent must be in [1, 5], got {self.exponent}")

    def model(self, a: F64) -> F64:
        """``(N, 3)`` Möbius parameters ``(α, β, γ)`` fitted across the curves at each attenuation ``a``."""
        a = np.atleast_1d(np.asarray(a, dtype=np.float64))
        r = np.stack([c.r_at(a) for c in self.curves], axis=1)  # (N, M)
        x = np.asarray([c.effective_z ** self.exponent for c in self.curves], dtype=np.float64)
        x = np.broadcast_to(x / x.max(), r.shape)  # scaled for conditioning; γ, β scale back below
        design = np.stack([np.ones_like(r), x, -x * r], axis=2)  # (N, M, 3)
        gram = np.einsum("nmi,nmj->nij", design, design)
        rhs = np.einsum("nmi,nm->ni", design, r)
        params = np.linalg.solve(gram, rhs[..., None])[..., 0]
        scale = max(c.effective_z ** self.exponent for c in self.curves)
        params[:, 1] /= scale
        params[:, 2] /= scale
        return params

    def z_of(self, a: F64, r: F64) -> F64:
        """Effective Z at attenuation ``a`` and ratio ``R`` (exact model; the grid's reference). Air gives 0."""
        a_flat = np.asarray(a, dtype=np.float64).ravel()
        r_flat = np.broadcast_to(np.asarray(r, dtype=np.float64), np.shape(a)).ravel()
        p = self.model(a_flat)
        z = _invert(r_flat, p[:, 0], p[:, 1], p[:, 2], self.exponent)
        z[a_flat < -math.log(self.air_t_high)] = 0.0
        return z.reshape(np.shape(a))


def _invert(r: F64, alpha: F64, beta: F64, gamma: F64, exponent: float) -> F64:
    """Closed-form inverse of the Möbius model, clamped to ``[Z_MIN, Z_MAX]`` (saturated R gives Z_MAX)."""
    den = beta - gamma * r
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (r - alpha) / den
    x = np.where(den <= 0, Z_MAX**exponent, x)
    x = np.clip(x, Z_MIN**exponent, Z_MAX**exponent)
    return np.asarray(x ** (1.0 / exponent), dtype=np.float64)


class ZeffLookup:
    """Dense ``(R, a) → Z`` grid built once from an :class:`EnergyCalibration`; per-pixel lookup is a remap.

    Grid: ``a`` uniform on ``[0, -ln T_FLOOR]`` (columns), ``R`` uniform on ``[0, r_hi]`` (rows), ``r_hi``
    chosen to reach ``Z_MAX`` at every attenuation. Bilinear interpolation between nodes.
    """

    def __init__(self, calibration: EnergyCalibration, n_a: int = 1024, n_r: int = 768) -> None:
        self.calibration = calibration
        self.n_a = n_a
        self.n_r = n_r
        self.a_max = -math.log(T_FLOOR)
        a = np.linspace(0.0, self.a_max, n_a)
        a[0] = a[1] * 0.5  # ln a must stay finite; column 0 is air anyway
        p = calibration.model(a)
        alpha, beta, gamma = p[:, 0], p[:, 1], p[:, 2]
        x_hi = Z_MAX**calibration.exponent
        # R >= 0 always (both logs are <= 0), so the R axis starts at 0 and needs no offset at run time.
        self.r_lo = 0.0
        self.r_hi = float(np.max((alpha + beta * x_hi) / (1 + gamma * x_hi))) + 0.05
        r = np.linspace(self.r_lo, self.r_hi, n_r)
        grid = _invert(r[:, None], alpha[None, :], beta[None, :], gamma[None, :], calibration.exponent)
        air_cols = a < -math.log(calibration.air_t_high)
        grid[:, air_cols] = 0.0
        self.a_nodes = a
        self.r_nodes = r
        self.z_grid: F32 = np.ascontiguousarray(grid, dtype=np.float32)
        self.z_grid.flags.writeable = False
        self._sx = np.float32((n_a - 1) / self.a_max)
        self._air_ln = np.float32(math.log(calibration.air_t_high))
        self._sy = np.float32((n_r - 1) / (self.r_hi - self.r_lo))

    def maps(self, ln_t_low: F32, ln_t_high: F32) -> tuple[F32, F32]:
        """Remap coordinates ``(map_x, map_y)`` of each pixel in the grid. Consumes (overwrites) both inputs.

        Args:
            ln_t_low, ln_t_high: ``(H, W) float32`` natural logs of transmission (<= 0).
        """
        map_x: F32 = np.multiply(ln_t_high, -self._sx)
        # R = ln T_low / ln T_high. Air pixels land in the all-zero air columns whatever their R, but their R is
        # 0/0 noise spread over every row, and fetching scattered rows costs remap 4x in cache misses; dividing
        # by at least the air attenuation keeps their R near 0 (and finite).
        np.minimum(ln_t_high, self._air_ln, out=ln_t_high)
        # Into ln_t_low's own buffer (consumed): a fresh (H, W) float32 array costs a page fault per 4 KiB.
        map_y: F32 = np.asarray(cv2.divide(ln_t_low, ln_t_high, dst=ln_t_low, scale=float(self._sy)),
                                dtype=np.float32)
        # Keep every coordinate strictly inside the grid: a bilinear fetch touching the last row takes remap's
        # per-pixel border path (4x slower on the many air pixels whose R is noise). The top rows all hold the
        # clamped value Z_MAX, so stopping short of the last one changes nothing. R >= 0 needs no lower bound.
        np.minimum(map_y, np.float32(self.n_r - 1.1), out=map_y)
        return map_x, map_y

    def remap(self, table: F32, map_x: F32, map_y: F32) -> F32:
        """Bilinear lookup of a float table laid out like ``z_grid``."""
        out = cv2.remap(table, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return np.asarray(out, dtype=table.dtype)

    def zeff(self, t_low: F32, t_high: F32) -> F32:
        """Effective Z ``(H, W) float32`` of transmissions in ``[T_FLOOR, 1]`` (convenience: not the hot path)."""
        map_x, map_y = self.maps(log_transmission(t_low), log_transmission(t_high))
        return np.asarray(self.remap(self.z_grid, map_x, map_y), dtype=np.float32)


def log_transmission(t: F32) -> F32:
    """``ln T`` of ``(H, W) float32`` transmissions in ``[T_FLOOR, 1]`` (OpenCV's log: parallel, ~1e-7 relative)."""
    return np.asarray(cv2.log(t), dtype=np.float32)


def calibration_to_yaml(cal: EnergyCalibration, extra: dict[str, object] | None = None) -> dict[str, object]:
    """The ``energy.yaml`` document of a calibration (``extra`` adds report sections such as per-step errors)."""
    doc: dict[str, object] = {
        "format_version": FORMAT_VERSION,
        "captured_wall": float(cal.captured_wall),
        "source": cal.source,
        "model": "mobius_z_power",
        "exponent": float(cal.exponent),
        "air_t_high": float(cal.air_t_high),
        "fit_error": {"z_rms": round(float(cal.fit_error_z_rms), 4), "z_max": round(float(cal.fit_error_z_max), 4)},
        "curves": [
            {
                "material": c.material,
                "effective_z": float(c.effective_z),
                "coeffs_ln_a": [float(v) for v in c.coeffs],
                "a_range": [float(c.a_min), float(c.a_max)],
                "rms_residual_r": float(c.rms_residual_r),
                "steps": int(c.steps),
            }
            for c in cal.curves
        ],
    }
    if extra:
        doc.update(extra)
    return doc


def load_energy_calibration(path: Path) -> EnergyCalibration:
    """Read ``energy.yaml``.

    Raises:
        CalibrationError: missing file, wrong version, malformed curves.
    """
    doc = read_yaml_mapping(path)
    version = require(doc, "format_version", int, path)
    if version != FORMAT_VERSION:
        raise CalibrationError(f"{path}: format_version {version} is not supported; expected {FORMAT_VERSION}")
    raw_curves = require(doc, "curves", list, path)
    curves = []
    for i, item in enumerate(raw_curves):
        where = f"curves[{i}]"
        if not isinstance(item, dict):
            raise CalibrationError(f"{path}: {where}: expected a mapping")
        try:
            a_range = item["a_range"]
            curves.append(RCurve(
                material=str(item["material"]),
                effective_z=float(item["effective_z"]),
                coeffs=tuple(float(v) for v in item["coeffs_ln_a"]),
                a_min=float(a_range[0]),
                a_max=float(a_range[1]),
                rms_residual_r=float(item.get("rms_residual_r", 0.0)),
                steps=int(item.get("steps", 0)),
            ))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CalibrationError(f"{path}: {where}: malformed curve ({exc})") from None
    fit = doc.get("fit_error", {}) or {}
    try:
        return EnergyCalibration(
            curves=tuple(curves),
            exponent=float(require(doc, "exponent", (int, float), path)),
            air_t_high=float(require(doc, "air_t_high", (int, float), path)),
            fit_error_z_rms=float(fit.get("z_rms", 0.0)),
            fit_error_z_max=float(fit.get("z_max", 0.0)),
            captured_wall=float(doc.get("captured_wall", 0.0)),
            source=str(doc.get("source", "")),
        )
    except ValueError as exc:
        raise CalibrationError(f"{path}: {exc}") from None
