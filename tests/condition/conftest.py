"""Shared fixtures for the conditioning tests: one virtual scanner, its flat-field and a fitted Z calibration.

The virtual scanner stands in for the hardware only; everything downstream of its raw counts is the real code.
Building the scanner reads spekpy/xraydb (about 2 s), so it is built once per session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calib.energy import fit_energy_calibration, measure_steps, steps_from_records
from calib.flatfield import ReferenceLines, compute_flatfield
from edge.condition import Conditioner, EnergyCalibration, FlatField, FlatFieldCorrector
from edge.config.condition import PaletteConfig
from sim.physics import DualEnergyScanner, ScannerSpec
from sim.wedge import render_wedge

FIT_MATERIALS = ("pom", "water", "aluminium", "steel")
REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def scanner() -> DualEnergyScanner:
    return DualEnergyScanner(ScannerSpec(), seed=11)


@pytest.fixture(scope="session")
def flatfield(scanner: DualEnergyScanner) -> FlatField:
    rng = np.random.default_rng(101)
    dark, air = scanner.dark_lines(128, rng), scanner.air_lines(128, rng)
    return compute_flatfield(ReferenceLines(dark.low, dark.high), ReferenceLines(air.low, air.high), "test")


@pytest.fixture(scope="session")
def energy_calibration(scanner: DualEnergyScanner, flatfield: FlatField) -> EnergyCalibration:
    """Fitted on POM, water, aluminium and steel wedges only (8 steps each, T_high 90% → 5%)."""
    scan = render_wedge(scanner, np.random.default_rng(102), materials=FIT_MATERIALS, n_steps=8)
    corrector = FlatFieldCorrector(flatfield)
    t_low, t_high = corrector.apply(scan.raw.low, 0), corrector.apply(scan.raw.high, 1)
    steps = steps_from_records(scan.steps)
    return fit_energy_calibration(measure_steps(t_low, t_high, steps), FIT_MATERIALS, source="test wedge")


@pytest.fixture(scope="session")
def conditioner(flatfield: FlatField, energy_calibration: EnergyCalibration) -> Conditioner:
    return Conditioner(flatfield, energy_calibration, PaletteConfig())
