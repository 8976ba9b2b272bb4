"""Shared fixtures: the virtual exit camera and scanner, and a target pass written as capture sets."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from sim.board import TargetGeometry
from sim.camera import CameraSpec, ExitCamera, simulate_intrinsics_views, simulate_target_pass, write_capture_set
from sim.physics import DualEnergyScanner
from sim.target import TargetPlacement
from tests.calib.calib_helpers import SimWorld

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata_calib() -> Path:
    d = REALDATA / "calib"
    if not d.is_dir():
        pytest.skip(f"real calibration photos not found at {d} (third-party data lives outside the repo)")
    return d


@pytest.fixture(scope="session")
def sim_world(tmp_path_factory: pytest.TempPathFactory) -> SimWorld:
    root = tmp_path_factory.mktemp("simcal")
    cam = ExitCamera(CameraSpec(), pitch_mm=0.8, seed=3)
    geom = TargetGeometry()
    views = root / "views"
    views.mkdir()
    for i, img in enumerate(simulate_intrinsics_views(cam, geom, n=9, seed=5)):
        cv2.imwrite(str(views / f"view_{i:02d}.png"), img)
    scanner = DualEnergyScanner(seed=11)
    p1 = simulate_target_pass(cam, scanner, geom, TargetPlacement(250.0, 220.0, 3.0), seed=1)
    write_capture_set(str(root / "pass1"), p1, 0.8)
    # a second pass: board elsewhere across the belt and turned the other way
    p2 = simulate_target_pass(cam, scanner, geom, TargetPlacement(275.0, 240.0, -4.0), (-60.0, 60.0), seed=2)
    write_capture_set(str(root / "pass2"), p2, 0.8)
    return SimWorld(cam, geom, views, root / "pass1", root / "pass2")
