"""Effective-Z calibration: fitted on four wedge materials, judged on wedges it never saw.

Truth comes from the virtual scanner (``sim.physics``: each material's power-law Z_eff from its composition),
not from the code under test. Acceptance (issue 4): |Z error| <= 1.0 for Z 6-26 wherever T_high is 5-90%.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calib.energy import (
    StepMeasurement,
    StepRegion,
    fit_energy_calibration,
    read_layout,
    save_energy_calibration,
    step_errors,
    steps_from_records,
)
from edge.condition import EnergyCalibration, FlatField, FlatFieldCorrector, ZeffLookup, load_energy_calibration
from edge.errors import CalibrationError
from sim.physics import MATERIALS, DualEnergyScanner
from sim.wedge import render_wedge, wedge_thicknesses

HELD_OUT = ("nylon", "cellulose", "sugar", "glass", "pvc", "salt", "titanium", "stainless",
            "pom", "water", "aluminium", "steel")
"""Other materials, and the fitted materials at thicknesses that were not fitted."""


@pytest.fixture(scope="module")
def held_out_errors(scanner: DualEnergyScanner, flatfield: FlatField,
                    energy_calibration: EnergyCalibration) -> list:
    thick = {m: wedge_thicknesses(scanner, m, 7, 0.88, 0.055) for m in HELD_OUT}
    scan = render_wedge(scanner, np.random.default_rng(7), materials=HELD_OUT, n_steps=7, thicknesses=thick)
    corrector = FlatFieldCorrector(flatfield)
    t_low, t_high = corrector.apply(scan.raw.low, 0), corrector.apply(scan.raw.high, 1)
    zeff = ZeffLookup(energy_calibration).zeff(t_low.copy(), t_high.copy())
    return step_errors(zeff, t_low, t_high, steps_from_records(scan.steps), energy_calibration)


def test_held_out_wedges_within_one_z(held_out_errors: list) -> None:
    judged = [e for e in held_out_errors if 6.0 <= e.effective_z <= 26.0 and 0.05 <= e.t_high <= 0.9]
    assert len(judged) >= 70  # every held-out step is in range: nothing silently filtered away
    worst = max(judged, key=lambda e: abs(e.error))
    assert abs(worst.error) <= 1.0, worst
    # the exact model at the step's mean transmission is just as good (no grid artefact hides behind medians)
    assert max(abs(e.z_of_mean - e.effective_z) for e in judged) <= 1.0


def test_material_classes_are_separated(held_out_errors: list) -> None:
    """Organics, light inorganics and metals land in their palette classes on every step."""
    for e in held_out_errors:
        if e.effective_z < 8:
            assert e.z_median < 10, e
        elif e.effective_z < 16:
            assert 10 <= e.z_median < 18, e
        else:
            assert e.z_median >= 18, e


def test_fit_error_is_reported_and_small(energy_calibration: EnergyCalibration) -> None:
    assert 0.0 < energy_calibration.fit_error_z_rms <= energy_calibration.fit_error_z_max < 1.0
    assert [c.material for c in energy_calibration.curves] == ["pom", "water", "aluminium", "steel"]
    assert all(c.steps == 8 and c.rms_residual_r < 0.02 for c in energy_calibration.curves)


def test_grid_matches_exact_model_and_is_monotone(energy_calibration: EnergyCalibration) -> None:
    lookup = ZeffLookup(energy_calibration)
    rng = np.random.default_rng(0)
    t_high = rng.uniform(0.03, 0.93, 5000).astype(np.float32)
    # arbitrary (a, R) points across the range the scanner produces
    r = rng.uniform(1.1, 3.8, 5000)
    a = -np.log(t_high.astype(np.float64))
    t_low = np.exp(-r * a).astype(np.float32)
    exact = energy_calibration.z_of(a, np.log(t_low.astype(np.float64)) / -a)
    grid = lookup.zeff(t_low[None, :], t_high[None, :])[0]
    inside = (exact > 2) & (exact < 40)
    assert np.abs(grid[inside] - exact[inside]).max() < 0.25
    # at every attenuation, Z rises with R (no fold in the lookup)
    assert np.all(np.diff(lookup.z_grid[:, 10:], axis=0) >= 0)
    # air columns are zero
    assert np.all(lookup.zeff(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32)) == 0)


def test_save_load_roundtrip_gives_the_same_lookup(tmp_path: Path, energy_calibration: EnergyCalibration) -> None:
    path = tmp_path / "energy.yaml"
    save_energy_calibration(energy_calibration, path)
    loaded = load_energy_calibration(path)
    np.testing.assert_allclose(ZeffLookup(loaded).z_grid, ZeffLookup(energy_calibration).z_grid, atol=1e-5)
    assert loaded.fit_error_z_max == pytest.approx(energy_calibration.fit_error_z_max, abs=1e-4)
    assert save_energy_calibration(loaded, path) is not None  # second write archives the first
    path.write_text("format_version: 1\ncurves: []\nexponent: 2.94\nair_t_high: 0.97\n")
    with pytest.raises(CalibrationError, match="at least 3 different Z"):
        load_energy_calibration(path)
    path.write_text("format_version: 9\n")
    with pytest.raises(CalibrationError, match="format_version 9"):
        load_energy_calibration(path)


def test_fit_refuses_too_few_materials_and_unknown_material() -> None:
    def meas(material: str, z: float, t_low: float, t_high: float) -> StepMeasurement:
        return StepMeasurement(StepRegion(material, z, (0, 10), (0, 10)), t_low, t_high)

    two = [meas("pom", 6.95, 0.4, 0.5), meas("pom", 6.95, 0.1, 0.2), meas("steel", 25.9, 0.05, 0.5),
           meas("steel", 25.9, 0.01, 0.2)]
    with pytest.raises(CalibrationError, match="at least 3 different Z"):
        fit_energy_calibration(two)
    with pytest.raises(CalibrationError, match="no usable wedge steps of 'copper'"):
        fit_energy_calibration(two, ["pom", "copper"])


def test_layout_file(tmp_path: Path) -> None:
    path = tmp_path / "wedge.yaml"
    z = MATERIALS["aluminium"].effective_z
    path.write_text(f"steps:\n  - {{material: aluminium, effective_z: {z}, rows: [10, 50], cols: [24, 72]}}\n")
    steps = read_layout(path)
    assert steps == [StepRegion("aluminium", z, (10, 50), (24, 72))]
    path.write_text("steps:\n  - {material: aluminium, rows: [10, 50]}\n")
    with pytest.raises(CalibrationError, match=r"steps\[0\]"):
        read_layout(path)
