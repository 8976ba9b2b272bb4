"""``edge calibrate energy``: fit the effective-Z calibration (R-curves) from a step-wedge scan.

Where it sits: commissioning, after ``edge calibrate flatfield``. A wedge scan (reference materials of known
Z, several thicknesses each, laid out as rectangular steps) is flat-fielded; every step's mean transmission
gives one point ``(a = -ln T_high, R = ln T_low / ln T_high)``; per material a cubic in ``ln a`` is fitted
(the R-curve), and ``edge.condition.zeff`` builds the runtime lookup from those curves. The fit error on the
steps is stored with the curves in ``energy.yaml`` (atomic write, history kept).

Averaging transmission over a whole step (not averaging per-pixel ``R``) keeps quantum noise from biasing the
curve: the mean of Poisson counts is unbiased, the mean of a ratio of logs is not.

Must not: fit on steps outside the trustworthy transmission window (default 2% to 95%): near air R is 0/0,
near the noise floor it is noise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import typer
from numpy.typing import NDArray

from calib.paths import condition_path
from edge.condition.calfile import atomic_write_yaml, read_yaml_mapping
from edge.condition.zeff import (
    POWER_LAW_EXPONENT,
    EnergyCalibration,
    RCurve,
    ZeffLookup,
    calibration_to_yaml,
)
from edge.errors import CalibrationError

F32 = NDArray[np.float32]
DEFAULT_FIT_MATERIALS: tuple[str, ...] = ("pom", "water", "aluminium", "steel")


@dataclass(frozen=True, slots=True)
class StepRegion:
    """Where one wedge step lies in the scan and what it is.

    Attributes:
        material: reference material name.
        effective_z: its known effective Z.
        rows, cols: half-open pixel ranges of the step (rows = belt lines, cols = channels).
        thickness_mm: path length, for reports only.
    """

    material: str
    effective_z: float
    rows: tuple[int, int]
    cols: tuple[int, int]
    thickness_mm: float = 0.0

    def inner(self, margin: int = 4) -> tuple[slice, slice]:
        """The step's pixels away from its edges (edges mix with neighbours)."""
        r0, r1 = self.rows[0] + margin, self.rows[1] - margin
        c0, c1 = self.cols[0] + margin, self.cols[1] - margin
        if r1 <= r0 or c1 <= c0:
            raise CalibrationError(f"{self.material} step at rows {self.rows} cols {self.cols} is too small for a "
                                   f"{margin}-pixel margin")
        return slice(r0, r1), slice(c0, c1)


@dataclass(frozen=True, slots=True)
class StepMeasurement:
    """One step's mean transmissions and the point they give on its material's R-curve."""

    step: StepRegion
    t_low: float
    t_high: float

    @property
    def a(self) -> float:
        """High-energy attenuation ``-ln T_high``."""
        return -math.log(self.t_high)

    @property
    def r(self) -> float:
        """``ln T_low / ln T_high``."""
        return math.log(self.t_low) / math.log(self.t_high)


def steps_from_records(records: Iterable[Any]) -> list[StepRegion]:
    """Adapter for step truth records that carry ``material``, ``effective_z``, ``rows``, ``cols`` (e.g. sim)."""
    return [StepRegion(str(r.material), float(r.effective_z), (int(r.rows[0]), int(r.rows[1])),
                       (int(r.cols[0]), int(r.cols[1])), float(getattr(r, "thickness_mm", 0.0))) for r in records]


def measure_steps(t_low: F32, t_high: F32, steps: Sequence[StepRegion], margin: int = 4) -> list[StepMeasurement]:
    """Mean low/high transmission over each step's inner pixels."""
    out = []
    for st in steps:
        sl = st.inner(margin)
        out.append(StepMeasurement(st, float(np.mean(t_low[sl], dtype=np.float64)),
                                   float(np.mean(t_high[sl], dtype=np.float64))))
    return out


def fit_r_curve(material: str, effective_z: float, points: Sequence[StepMeasurement], degree: int = 3) -> RCurve:
    """Least-squares polynomial in ``ln a`` through one material's step points.

    Raises:
        CalibrationError: fewer than two usable steps.
    """
    if len(points) < 2:
        raise CalibrationError(f"{material}: {len(points)} usable wedge steps; need at least 2 (3+ for a curve)")
    a = np.asarray([p.a for p in points])
    r = np.asarray([p.r for p in points])
    deg = min(degree, len(points) - 1)
    coeffs = np.polyfit(np.log(a), r, deg)
    resid = np.polyval(coeffs, np.log(a)) - r
    return RCurve(material, float(effective_z), tuple(float(c) for c in coeffs), float(a.min()), float(a.max()),
                  float(np.sqrt(np.mean(resid**2))), len(points))


def fit_energy_calibration(
    measurements: Sequence[StepMeasurement],
    materials: Sequence[str] | None = None,
    t_window: tuple[float, float] = (0.02, 0.95),
    degree: int = 3,
    air_t_high: float = 0.97,
    source: str = "",
) -> EnergyCalibration:
    """Fit R-curves of ``materials`` (default: every material measured) and the calibration's own fit error.

    Raises:
        CalibrationError: a requested material has no steps, or fewer than three distinct Z remain.
    """
    usable = [m for m in measurements if t_window[0] <= m.t_high <= t_window[1] and m.t_low > 0]
    names = list(dict.fromkeys(m.step.material for m in usable)) if materials is None else list(materials)
    curves = []
    for name in names:
        pts = [m for m in usable if m.step.material == name]
        if not pts:
            measured = sorted({m.step.material for m in measurements})
            raise CalibrationError(f"no usable wedge steps of {name!r} (T_high in {t_window}); measured: {measured}")
        curves.append(fit_r_curve(name, pts[0].step.effective_z, pts, degree))
    try:
        cal = EnergyCalibration(tuple(curves), POWER_LAW_EXPONENT, air_t_high, source=source,
                                captured_wall=time.time())
    except ValueError as exc:
        raise CalibrationError(str(exc)) from None
    fitted = [m for m in usable if m.step.material in names]
    err = cal.z_of(np.asarray([m.a for m in fitted]), np.asarray([m.r for m in fitted])) - \
        np.asarray([m.step.effective_z for m in fitted])
    return EnergyCalibration(cal.curves, cal.exponent, cal.air_t_high, float(np.sqrt(np.mean(err**2))),
                             float(np.max(np.abs(err))), cal.captured_wall, source)


@dataclass(frozen=True, slots=True)
class StepError:
    """Effective-Z error on one wedge step (a row of the acceptance table)."""

    material: str
    effective_z: float
    thickness_mm: float
    t_high: float
    z_median: float
    z_of_mean: float
    z_pixel_std: float
    in_fit: bool

    @property
    def error(self) -> float:
        """Median per-pixel Z minus true Z."""
        return self.z_median - self.effective_z


def step_errors(zeff: F32, t_low: F32, t_high: F32, steps: Sequence[StepRegion], cal: EnergyCalibration,
                fitted: Sequence[tuple[str, float]] = (), margin: int = 4) -> list[StepError]:
    """Per-step effective-Z errors of a conditioned wedge scan.

    ``z_median`` is the median of the per-pixel lookup (what the runtime produces), ``z_of_mean`` the exact model
    at the step's mean transmission (the calibration's bias without pixel noise). ``fitted`` lists
    ``(material, thickness_mm)`` pairs that were used in the fit, to mark them in the table.
    """
    fit_set = {(m, round(t, 3)) for m, t in fitted}
    out = []
    for st, meas in zip(steps, measure_steps(t_low, t_high, steps, margin), strict=True):
        sl = st.inner(margin)
        z = zeff[sl]
        z_mean = float(cal.z_of(np.asarray([meas.a]), np.asarray([meas.r]))[0])
        out.append(StepError(st.material, st.effective_z, st.thickness_mm, meas.t_high, float(np.median(z)),
                             z_mean, float(np.std(z)), (st.material, round(st.thickness_mm, 3)) in fit_set))
    return out


def read_layout(path: Path) -> list[StepRegion]:
    """Read a wedge layout YAML: ``steps: [{material, effective_z, rows: [r0, r1], cols: [c0, c1]}, ...]``."""
    doc = read_yaml_mapping(path)
    items = doc.get("steps")
    if not isinstance(items, list) or not items:
        raise CalibrationError(f"{path}: steps: expected a non-empty list of wedge steps")
    out = []
    for i, it in enumerate(items):
        try:
            out.append(StepRegion(str(it["material"]), float(it["effective_z"]),
                                  (int(it["rows"][0]), int(it["rows"][1])), (int(it["cols"][0]), int(it["cols"][1])),
                                  float(it.get("thickness_mm", 0.0))))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CalibrationError(f"{path}: steps[{i}]: expected material, effective_z, rows, cols ({exc})") from None
    return out


def save_energy_calibration(cal: EnergyCalibration, path: Path, report: Sequence[StepError] = (),
                            validation: Sequence[StepError] = ()) -> Path | None:
    """Write ``energy.yaml`` atomically (previous version kept in ``history/``), with the step tables."""
    extra: dict[str, object] = {}
    for key, rows in (("steps", report), ("validation", validation)):
        if rows:
            extra[key] = [
                {"material": e.material, "effective_z": round(e.effective_z, 3), "thickness_mm": e.thickness_mm,
                 "t_high": round(e.t_high, 4), "z_median": round(e.z_median, 3), "error": round(e.error, 3),
                 "in_fit": e.in_fit}
                for e in rows
            ]
    return atomic_write_yaml(path, calibration_to_yaml(cal, extra))


def format_table(rows: Sequence[StepError]) -> str:
    """Markdown table of step errors (used by the CLI and pasted into docs/conditioning.md)."""
    lines = ["| material | Z true | thickness mm | T_high | Z median | error | pixel std | in fit |",
             "|---|---|---|---|---|---|---|---|"]
    for e in rows:
        lines.append(f"| {e.material} | {e.effective_z:.2f} | {e.thickness_mm:g} | {e.t_high:.3f} | "
                     f"{e.z_median:.2f} | {e.error:+.2f} | {e.z_pixel_std:.2f} | {'yes' if e.in_fit else 'no'} |")
    return "\n".join(lines)


def _sim_transmission(seed: int, materials: Sequence[str], n_steps: int, rng_offset: int,
                      thickness_range: tuple[float, float] | None = None) -> tuple[F32, F32, list[StepRegion]]:
    """Render a virtual-scanner wedge and flat-field it with the scanner's own dark/air lines."""
    from calib.flatfield import ReferenceLines, compute_flatfield
    from edge.condition.flatfield import FlatFieldCorrector
    from sim.physics import MATERIALS, DualEnergyScanner
    from sim.wedge import render_wedge, wedge_thicknesses

    unknown = [m for m in materials if m not in MATERIALS]
    if unknown:
        raise CalibrationError(f"unknown wedge material(s) {unknown}; the virtual scanner knows: "
                               f"{', '.join(sorted(MATERIALS))}")
    scanner = DualEnergyScanner(seed=seed)
    thick: dict[str, Sequence[float]] | None = None
    if thickness_range is not None:
        thick = {m: wedge_thicknesses(scanner, m, n_steps, *thickness_range) for m in materials}
    scan = render_wedge(scanner, np.random.default_rng(seed + rng_offset), materials=tuple(materials),
                        n_steps=n_steps, thicknesses=thick)
    ff = compute_flatfield(ReferenceLines(scan.dark.low, scan.dark.high),
                           ReferenceLines(scan.air.low, scan.air.high), f"sim seed={seed}")
    corrector = FlatFieldCorrector(ff)
    return corrector.apply(scan.raw.low, 0), corrector.apply(scan.raw.high, 1), steps_from_records(scan.steps)


def calibrate_from_sim(seed: int, materials: Sequence[str], fit_materials: Sequence[str] | None,
                       n_steps: int = 8) -> tuple[EnergyCalibration, list[StepError]]:
    """Render the virtual scanner's step wedge, flat-field it with its own references, fit and evaluate.

    Steps of ``materials`` not in ``fit_materials`` are scanned and reported but not fitted.
    """
    t_low, t_high, steps = _sim_transmission(seed, materials, n_steps, 2)
    cal = fit_energy_calibration(measure_steps(t_low, t_high, steps), fit_materials,
                                 source=f"sim wedge seed={seed}")
    zeff = ZeffLookup(cal).zeff(t_low.copy(), t_high.copy())
    fitted = [(s.material, s.thickness_mm) for s in steps if s.material in {c.material for c in cal.curves}]
    return cal, step_errors(zeff, t_low, t_high, steps, cal, fitted)


def validate_from_sim(seed: int, cal: EnergyCalibration, materials: Sequence[str],
                      n_steps: int = 7) -> list[StepError]:
    """Errors on a second, held-out wedge: new noise, thicknesses between the fitted ones (T_high 88% → 5.5%)."""
    t_low, t_high, steps = _sim_transmission(seed, materials, n_steps, 7, (0.88, 0.055))
    zeff = ZeffLookup(cal).zeff(t_low.copy(), t_high.copy())
    return step_errors(zeff, t_low, t_high, steps, cal)


def default_out(config: Path | None) -> Path:
    """The energy calibration path of ``config`` (see ``calib.paths.condition_path``)."""
    return condition_path(config, "energy_file")


def energy_command(
    out: Path | None = typer.Option(None, "--out", "-o", help="energy.yaml to write; default: "
                                    "condition.energy_file of --config"),
    config: Path | None = typer.Option(None, "--config", "-c", help="edge.yaml naming the calibration files"),
    from_sim: bool = typer.Option(False, "--from-sim", help="scan the virtual scanner's step wedge"),
    seed: int = typer.Option(0, help="virtual scanner seed"),
    fit: str = typer.Option(",".join(DEFAULT_FIT_MATERIALS), help="comma-separated materials to fit"),
    scan: Path | None = typer.Option(None, help="raw wedge scan: .npz with low/high (H, W) uint16"),
    layout: Path | None = typer.Option(None, help="wedge layout YAML: steps with material, effective_z, rows, cols"),
    flatfield: Path | None = typer.Option(None, help="flat-field npz for --scan; default: condition.flatfield_file"),
    validate: str = typer.Option("", help="with --from-sim: comma-separated materials of a held-out wedge to "
                                 "report errors on (e.g. glass,pvc,titanium)"),
) -> None:
    """Fit the effective-Z lookup (R-curves) from a step-wedge scan and store it with its fit error.

    Examples:
      edge calibrate energy --from-sim --out /tmp/cal/energy.yaml
      edge calibrate energy --from-sim --validate glass,pvc,titanium,stainless -o /tmp/cal/energy.yaml
      edge calibrate energy --scan wedge.npz --layout wedge.yaml --fit pom,water,aluminium,steel -c /etc/edge/edge.yaml
    """
    target = out if out is not None else default_out(config)
    fit_materials = [m.strip() for m in fit.split(",") if m.strip()]
    try:
        if from_sim:
            from sim.wedge import DEFAULT_WEDGE_MATERIALS

            materials = list(dict.fromkeys([*DEFAULT_WEDGE_MATERIALS, *fit_materials]))
            cal, report = calibrate_from_sim(seed, materials, fit_materials)
            held_out = [m.strip() for m in validate.split(",") if m.strip()]
            validation = validate_from_sim(seed, cal, held_out) if held_out else []
        elif scan is not None and layout is not None:
            cal, report = _calibrate_from_files(scan, layout, flatfield, config, fit_materials)
            validation = []
        else:
            typer.echo("give either --from-sim or both --scan and --layout", err=True)
            raise typer.Exit(code=2)
        archived = save_energy_calibration(cal, target, report, validation)
    except CalibrationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(format_table(report))
    if validation:
        judged = [e for e in validation if 0.05 <= e.t_high <= 0.9]
        typer.echo("\nheld-out wedge (other thicknesses, new noise):")
        typer.echo(format_table(validation))
        if judged:
            typer.echo(f"held-out max |error| for T_high 5-90%: {max(abs(e.error) for e in judged):.2f}")
    typer.echo(f"wrote {target}: {len(cal.curves)} R-curves ({', '.join(c.material for c in cal.curves)}); "
               f"fit error Z rms {cal.fit_error_z_rms:.3f}, max {cal.fit_error_z_max:.3f}")
    if archived is not None:
        typer.echo(f"previous calibration kept as {archived}")


def _calibrate_from_files(scan: Path, layout: Path, flatfield: Path | None, config: Path | None,
                          fit_materials: Sequence[str]) -> tuple[EnergyCalibration, list[StepError]]:
    from calib.flatfield import default_out as flatfield_default
    from calib.flatfield import read_reference_lines
    from edge.condition.flatfield import FlatFieldCorrector, load_flatfield

    ff = load_flatfield(flatfield if flatfield is not None else flatfield_default(config))
    raw = read_reference_lines(scan, "npz")
    corrector = FlatFieldCorrector(ff)
    t_low, t_high = corrector.apply(raw.low, 0), corrector.apply(raw.high, 1)
    steps = read_layout(layout)
    cal = fit_energy_calibration(measure_steps(t_low, t_high, steps), fit_materials, source=f"scan={scan}")
    zeff = ZeffLookup(cal).zeff(t_low, t_high)
    fitted = [(s.material, s.thickness_mm) for s in steps if s.material in fit_materials]
    return cal, step_errors(zeff, t_low, t_high, steps, cal, fitted)
