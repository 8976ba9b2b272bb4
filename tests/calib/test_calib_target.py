"""The printable target: true scale, detectable print, steel cut file matching the pattern."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from calib.cli import calibrate_app
from calib.detect import detect_charuco
from calib.target import board_spec, load_geometry
from sim.board import TargetGeometry


def _png_dpi(data: bytes) -> float:
    i = data.index(b"pHYs")
    ppu_x, _, unit = struct.unpack(">IIB", data[i + 4:i + 13])
    assert unit == 1
    return ppu_x / 1000.0 * 25.4


def test_target_command_writes_true_scale_print_and_cut_file(tmp_path: Path) -> None:
    res = CliRunner().invoke(calibrate_app, ["target", "--out", str(tmp_path), "--dpi", "150"])
    assert res.exit_code == 0, res.output
    geom = load_geometry(tmp_path / "target.yaml")
    assert geom == TargetGeometry()
    png = (tmp_path / "target-print.png").read_bytes()
    assert abs(_png_dpi(png) - 150) < 0.1
    page = cv2.imread(str(tmp_path / "target-print.png"), cv2.IMREAD_GRAYSCALE)
    ppm = 150 / 25.4
    margin = round(15 * ppm)
    assert abs(page.shape[1] - (geom.width_mm * ppm + 2 * margin)) <= 1
    # the printed page is detectable and its corners sit where the geometry says (true scale)
    found = detect_charuco(page, board_spec(geom))
    assert len(found) == len(geom.corners_mm())
    expect = geom.corners_mm()[found.ids] * ppm - 0.5 + margin
    assert np.abs(found.points_px - expect).max() < 1.0
    pdf = (tmp_path / "target-print.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    media = pdf[pdf.index(b"/MediaBox [") + 11:].split(b"]")[0].split()
    assert abs(float(media[2]) / 72 * 25.4 - (geom.width_mm + 30)) < 0.5
    svg = ET.fromstring((tmp_path / "target-steel.svg").read_text())
    assert svg.attrib["width"] == f"{geom.width_mm:g}mm"


def test_steel_outlines_cover_exactly_the_black_pattern() -> None:
    geom = TargetGeometry()
    loops = geom.steel_outlines_mm()
    signed = sum(cv2.contourArea(loop.astype(np.float32), oriented=True) for loop in loops)
    mask_area = float((geom.black_mask(10.0) > 0).sum()) / 100.0
    assert abs(abs(signed) - mask_area) / mask_area < 0.005
    # every loop is closed, axis-aligned and inside the board
    for loop in loops:
        assert loop.min() >= 0 and loop[:, 0].max() <= geom.width_mm and loop[:, 1].max() <= geom.height_mm
        d = np.diff(np.vstack([loop, loop[:1]]), axis=0)
        assert np.all((np.abs(d[:, 0]) < 1e-9) | (np.abs(d[:, 1]) < 1e-9))


def test_bad_geometry_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(calibrate_app, ["target", "--out", str(tmp_path), "--marker-mm", "60"])
    assert res.exit_code == 2
    assert "marker_mm" in res.output
