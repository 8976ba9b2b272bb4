"""Session fixtures: bundles and calibrations are made once (exports and calibration take seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.bundles import Role
from tests.service.service_helpers import build_bundle, calibrate


@dataclass(frozen=True)
class Assets:
    detector: Path
    scorer: Path
    fragile_scorer: Path
    flat: Path
    energy: Path


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    work = tmp_path_factory.mktemp("service-assets")
    flat, energy = calibrate(work)
    return Assets(
        detector=build_bundle(Role.DETECTOR, work, "det"),
        scorer=build_bundle(Role.SCORER, work, "scorer"),
        fragile_scorer=build_bundle(Role.SCORER, work, "scorer-batch1", fixed_batch=True),
        flat=flat,
        energy=energy,
    )
