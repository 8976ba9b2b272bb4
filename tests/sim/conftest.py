"""Shared fixtures for the virtual-scanner tests: one scanner per session (building it reads spekpy/xraydb)."""

from __future__ import annotations

import pytest

from sim.physics import DualEnergyScanner, ScannerSpec


@pytest.fixture(scope="session")
def scanner() -> DualEnergyScanner:
    return DualEnergyScanner(ScannerSpec(), seed=7)
