"""Mapping maths and the calibration file: round trips, heights, atomic save with history, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from edge.camera import calibration as calfile
from edge.camera.mapping import CameraMapper, densify
from edge.errors import CalibrationError
from sim.camera import ExitCamera
from tests.camera.camera_helpers import PLANE_MM, calibration_from_truth


def test_mapping_follows_the_belt_and_parallax(cam: ExitCamera) -> None:
    mapper = CameraMapper(calibration_from_truth(cam))
    pts = np.array([[20.0, 10.0], [320.0, 200.0], [600.0, 350.0]])
    for travel in (650.0, 800.0, 1000.0):
        for height in (None, 0.0, 150.0, 300.0):
            truth = cam.xray_to_camera(pts, travel, PLANE_MM if height is None else height)
            got = mapper.xray_to_camera(pts, travel, height)
            assert np.abs(got - truth).max() < 0.5, (travel, height)
            back = mapper.camera_to_xray(got, travel, height)
            assert np.abs(back - pts).max() < 1e-3
    # the view centre the mapper infers is where the true camera looks
    assert abs(mapper.view_centre_travel_mm(0.0) - cam.view_centre_travel_mm()) < 2.0


def test_densify_keeps_corners_and_bounds_steps() -> None:
    poly = np.array([[0.0, 0.0], [100.0, 0.0], [100.0, 50.0]])
    d = densify(poly, 6.0)
    assert all(any(np.allclose(p, q) for q in d) for p in poly)
    steps = np.linalg.norm(np.diff(np.vstack([d, d[:1]]), axis=0), axis=1)
    assert steps.max() <= 6.0 + 1e-9


def test_save_is_atomic_with_history_and_round_trips(cam: ExitCamera, tmp_path: Path) -> None:
    cal = calibration_from_truth(cam)
    path = tmp_path / "cal" / "camera.yaml"
    assert calfile.save(cal, path) is None
    kept = calfile.save(cal, path)
    assert kept is not None and kept.parent.name == "history" and kept.read_text() == path.read_text()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    back = calfile.load(path)
    assert back.homography is not None and cal.homography is not None
    np.testing.assert_allclose(back.homography.matrix, cal.homography.matrix)
    np.testing.assert_allclose(back.intrinsics.dist_coeffs, cal.intrinsics.dist_coeffs)


def test_bad_files_name_the_file_and_key(cam: ExitCamera, tmp_path: Path) -> None:
    path = tmp_path / "camera.yaml"
    with pytest.raises(CalibrationError, match=r"camera\.yaml"):
        calfile.load(path)
    calfile.save(calibration_from_truth(cam), path)
    data = yaml.safe_load(path.read_text())
    del data["intrinsics"]["camera_matrix"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CalibrationError, match="camera_matrix"):
        calfile.load(path)
    data = yaml.safe_load(path.read_text())
    data["schema"] = "something-else"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CalibrationError, match="schema"):
        calfile.load(path)


def test_mapper_needs_a_homography(cam: ExitCamera) -> None:
    cal = calibration_from_truth(cam)
    with pytest.raises(CalibrationError, match="calibrate homography"):
        CameraMapper(calfile.CameraCalibration(cal.intrinsics, None))
