"""Real ChArUco photos from OpenCV's tutorials: detection, and intrinsics against OpenCV's own reference."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from calib.cli import calibrate_app
from calib.detect import BoardSpec, detect_charuco
from edge.camera import calibration as calfile

# the tutorials' board: 5 x 7 squares of 40 mm, 20 mm markers, DICT_6X6_250 (realdata/SOURCES.md)
TUTORIAL = BoardSpec(5, 7, 40.0, 20.0, "DICT_6X6_250")
USED = ["charuco_choriginal.jpg", "charuco_calib_img_00.jpg", "charuco_calib_img_02.jpg", "charuco_calib_img_03.jpg"]


def test_charuco_detection_on_real_photos(realdata_calib: Path) -> None:
    for name in USED:
        found = detect_charuco(cv2.imread(str(realdata_calib / name)), TUTORIAL)
        assert len(found) >= 20, name  # 24 inner corners on the board
        assert len(set(found.ids.tolist())) == len(found)
    occluded = detect_charuco(cv2.imread(str(realdata_calib / "charuco_chocclusion_original.jpg")), TUTORIAL)
    assert 8 <= len(occluded) < 24  # a hand covers part of the board: fewer corners, but found


def test_calibrate_camera_matches_opencv_reference(realdata_calib: Path, tmp_path: Path) -> None:
    out = tmp_path / "camera.yaml"
    args = ["camera", *[str(realdata_calib / n) for n in USED], "-c", str(out), "--squares-x", "5",
            "--squares-y", "7", "--square-mm", "40", "--marker-mm", "20", "--dictionary", "DICT_6X6_250"]
    res = CliRunner().invoke(calibrate_app, args)
    assert res.exit_code == 0, res.output
    ours = calfile.load(out).intrinsics.camera_matrix
    fs = cv2.FileStorage(str(realdata_calib / "charuco_calib_reference_tutorial_camera_charuco.yml"),
                         cv2.FILE_STORAGE_READ)
    ref = np.asarray(fs.getNode("camera_matrix").mat())
    fs.release()
    assert abs(ours[0, 0] / ref[0, 0] - 1) <= 0.02
    assert abs(ours[1, 1] / ref[1, 1] - 1) <= 0.02
    assert abs(ours[0, 2] - ref[0, 2]) <= 5.0
    assert abs(ours[1, 2] - ref[1, 2]) <= 5.0
