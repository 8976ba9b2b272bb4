"""Acceptance on the virtual scanner with known truth: camera + homography calibration, then mapping error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from calib.cli import calibrate_app
from edge.camera import calibration as calfile
from edge.camera.mapping import CameraMapper
from tests.calib.calib_helpers import SimWorld, rms


@pytest.fixture(scope="module")
def calibrated(sim_world: SimWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cal") / "camera.yaml"
    runner = CliRunner()
    res = runner.invoke(calibrate_app, ["camera", *map(str, sorted(sim_world.views_dir.iterdir())), "-c", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(calibrate_app, ["homography", str(sim_world.pass1), "-c", str(out), "--residuals"])
    assert res.exit_code == 0, res.output
    assert "RMS" in res.output and "mm" in res.output
    return out


def test_intrinsics_recover_the_true_lens(sim_world: SimWorld, calibrated: Path) -> None:
    k = calfile.load(calibrated).intrinsics.camera_matrix
    spec = sim_world.camera.spec
    assert abs(k[0, 0] / spec.fx - 1) < 0.01 and abs(k[1, 1] / spec.fy - 1) < 0.01
    assert abs(k[0, 2] - spec.cx) < 4 and abs(k[1, 2] - spec.cy) < 4


def test_mapping_error_against_truth_across_belt_and_belt_times(sim_world: SimWorld, calibrated: Path) -> None:
    cal = calfile.load(calibrated)
    mapper = CameraMapper(cal)
    cam = sim_world.camera
    h = sim_world.geometry.thickness_mm
    # points across the whole detector width (channels 5..635) and 400 lines of item, seen at 5 belt times
    xs, ys = np.meshgrid(np.linspace(5, 635, 15), np.linspace(0, 400, 9))
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1)
    w, hgt = cam.spec.width_px, cam.spec.height_px
    seen_cols: set[int] = set()
    for travel in (550.0, 700.0, 850.0, 1000.0, 1150.0):
        truth = cam.xray_to_camera(pts, travel, h)
        est = mapper.xray_to_camera(pts, travel)
        inside = (truth[:, 0] >= 0) & (truth[:, 0] < w) & (truth[:, 1] >= 0) & (truth[:, 1] < hgt)
        assert inside.sum() >= 30
        err_px = np.linalg.norm(est - truth, axis=1)[inside]
        assert rms(err_px) <= 2.0, (travel, rms(err_px))
        # the same error on the belt in mm: where the truth camera point maps back in X-ray px
        back = mapper.camera_to_xray(truth[inside], travel)
        err_mm = np.linalg.norm(back - pts[inside], axis=1) * 0.8
        assert rms(err_mm) <= 2.0
        seen_cols |= {int(c) for c in pts[inside, 0]}
    assert min(seen_cols) <= 5 and max(seen_cols) >= 635  # the check did span the belt width


def test_stored_file_records_accuracy_source_and_history(sim_world: SimWorld, calibrated: Path) -> None:
    data = yaml.safe_load(calibrated.read_text())
    hom = data["homography"]
    assert hom["accuracy"]["rms_px"] < 2.0 and hom["accuracy"]["rms_mm"] is not None
    assert any("pass1" in s for s in hom["source"]) and hom["created"]
    assert data["target"]["dictionary"] == sim_world.geometry.dictionary
    # camera then homography wrote the file twice: the first version is in history/
    assert list((calibrated.parent / "history").glob("camera-*.yaml"))


def test_refuses_to_save_above_threshold(sim_world: SimWorld, calibrated: Path) -> None:
    before = calibrated.read_bytes()
    res = CliRunner().invoke(calibrate_app, ["homography", str(sim_world.pass1), "-c", str(calibrated),
                                             "--max-rms-px", "0.01"])
    assert res.exit_code == 1
    assert "refused" in res.output
    assert calibrated.read_bytes() == before


def test_check_passes_on_new_pass_and_flags_drift(sim_world: SimWorld, calibrated: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(calibrate_app, ["check", str(sim_world.pass2), "-c", str(calibrated)])
    assert res.exit_code == 0, res.output
    assert "drift" in res.output
    # the camera is knocked: shift the stored mapping by 6 px to the right
    data = yaml.safe_load(calibrated.read_text())
    m = np.array(data["homography"]["matrix"])
    data["homography"]["matrix"] = (np.array([[1, 0, 6.0], [0, 1, 0], [0, 0, 1]]) @ m).tolist()
    knocked = tmp_path / "knocked.yaml"
    knocked.write_text(yaml.safe_dump(data))
    res = runner.invoke(calibrate_app, ["check", str(sim_world.pass2), "-c", str(knocked)])
    assert res.exit_code == 1
    assert "drifted" in res.output


def test_homography_without_intrinsics_file_is_a_clear_error(sim_world: SimWorld, tmp_path: Path) -> None:
    res = CliRunner().invoke(calibrate_app, ["homography", str(sim_world.pass1), "-c", str(tmp_path / "no.yaml")])
    assert res.exit_code == 2
    assert "no.yaml" in res.output
