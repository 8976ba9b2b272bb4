"""The commissioning rehearsal end to end, through the command line an engineer types: `edge calibrate rehearse
views` → `calibrate camera` → `rehearse pass` → `calibrate homography` → a second pass → `calibrate check` (OK),
then the camera knocked by half a degree → `check` fails. Fast settings: a 640x360 camera, 6 views, 2 frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from calib.rehearse import RehearsalCamera
from edge.camera import calibration as calfile
from edge.camera.mapping import CameraMapper
from edge_tools.cli import app

CAMERA = ["--scale", "0.5", "--downstream-mm", "700", "--camera-seed", "4"]


def _edge(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def test_rehearsed_commissioning_calibrates_the_camera_and_check_catches_a_knock(tmp_path: Path) -> None:
    cal = tmp_path / "camera.yaml"
    code, out = _edge("calibrate", "rehearse", "views", "--out", str(tmp_path / "views"), "--n", "6", *CAMERA)
    assert code == 0, out
    views = sorted((tmp_path / "views").glob("view_*.png"))
    assert len(views) == 6
    code, out = _edge("calibrate", "camera", *map(str, views), "-c", str(cal))
    assert code == 0, out
    assert "reprojection RMS" in out

    code, out = _edge("calibrate", "rehearse", "pass", "--out", str(tmp_path / "pass-1"), "--offsets", "-60,60",
                      *CAMERA)
    assert code == 0, out
    code, out = _edge("calibrate", "homography", str(tmp_path / "pass-1"), "-c", str(cal))
    assert code == 0, out
    assert (tmp_path / "camera-overlay.png").stat().st_size > 0

    # the stored mapping against the virtual camera's true projection, across the belt, on the target's plane
    truth = RehearsalCamera(scale=0.5, downstream_mm=700.0, seed=4).camera()
    mapper = CameraMapper(calfile.load(cal))
    xs, ys = np.meshgrid(np.linspace(40, 600, 8), np.linspace(0, 500, 6))
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1)
    travel = truth.view_centre_travel_mm()
    plane = calfile.load(cal).homography
    assert plane is not None
    err = np.linalg.norm(mapper.xray_to_camera(pts, travel) - truth.xray_to_camera(pts, travel,
                                                                                    plane.plane_height_mm), axis=1)
    assert float(np.sqrt(np.mean(err**2))) < 1.0, err

    code, out = _edge("calibrate", "rehearse", "pass", "--out", str(tmp_path / "pass-2"), "--x-mm", "275",
                      "--y-mm", "240", "--rotation-deg", "-4", "--seed", "2", "--offsets", "-60,60", *CAMERA)
    assert code == 0, out
    code, out = _edge("calibrate", "check", str(tmp_path / "pass-2"), "-c", str(cal))
    assert code == 0, out
    assert out.rstrip().endswith("OK")

    code, out = _edge("calibrate", "rehearse", "pass", "--out", str(tmp_path / "knocked"), "--bump-deg", "0.5",
                      "--seed", "3", "--offsets", "-60,60", *CAMERA)
    assert code == 0, out
    code, out = _edge("calibrate", "check", str(tmp_path / "knocked"), "-c", str(cal), "--overlay",
                      str(tmp_path / "knocked.png"))
    assert code == 1, out
    assert "recalibrate" in out
    assert (tmp_path / "knocked.png").stat().st_size > 0  # the picture the engineer looks at, even on failure


def test_rehearsal_refuses_a_camera_it_cannot_make(tmp_path: Path) -> None:
    code, out = _edge("calibrate", "rehearse", "views", "--out", str(tmp_path / "v"), "--scale", "5")
    assert code == 2
    assert "scale" in out
    code, out = _edge("calibrate", "rehearse", "pass", "--out", str(tmp_path / "p"), "--offsets", "a,b")
    assert code == 2
    assert "--offsets" in out
    assert not (tmp_path / "v").exists() and not (tmp_path / "p").exists()
