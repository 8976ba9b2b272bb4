"""``edge calibrate …`` commands: target, camera, homography, check (flatfield, energy and the ``rehearse`` group
join the same app).

Where it sits: thin typer layer over ``calib.target``, ``calib.camera`` and ``calib.homography``; calibration
files go through ``edge.camera.calibration.save`` (atomic, with history). Exit codes: 0 success, 1 refused or
failed check, 2 bad input.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import typer

from calib.camera import calibrate_intrinsics, read_views
from calib.cli_common import geometry_or_exit
from calib.detect import BoardSpec
from calib.energy import energy_command
from calib.flatfield import flatfield_command
from calib.homography import (
    check_calibration,
    check_thresholds,
    estimate_homography,
    load_capture_set,
    match_corners,
    overlay_picture,
)
from calib.homography import residuals as residuals_of
from calib.rehearse_cli import rehearse_app
from calib.target import board_spec, geometry_to_dict, write_target
from edge.camera import calibration as calfile
from edge.camera.mapping import CameraMapper
from edge.errors import CalibrationError
from sim.board import TargetGeometry

calibrate_app = typer.Typer(help="Commission the scanner: targets, camera, homography, checks.",
                            no_args_is_help=True)

DEFAULT_CAL = Path("/var/lib/edge/calibration/camera.yaml")


def _fail(msg: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


@calibrate_app.command("target")
def target_cmd(
    out: Path = typer.Option(..., "--out", help="directory for the print PDF/PNG, steel SVG and target.yaml"),
    squares_x: int = typer.Option(9, help="chessboard squares across the belt"),
    squares_y: int = typer.Option(6, help="chessboard squares along the belt"),
    square_mm: float = typer.Option(50.0, help="square side in mm"),
    marker_mm: float = typer.Option(40.0, help="ArUco marker side in mm"),
    dictionary: str = typer.Option("DICT_4X4_50", help="OpenCV ArUco dictionary"),
    steel_mm: float = typer.Option(1.0, help="steel sheet thickness in mm"),
    dpi: float = typer.Option(300.0, help="print resolution in dots per inch"),
) -> None:
    """Write the printable cross-modal target at true scale.

    Example: edge calibrate target --out /tmp/target --dpi 300
    """
    try:
        geom = TargetGeometry(squares_x, squares_y, square_mm, marker_mm, dictionary, steel_mm)
        files = write_target(out, geom, dpi)
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"target {geom.width_mm:g} x {geom.height_mm:g} mm, {len(geom.corners_mm())} corners:")
    for f in files:
        typer.echo(f"  {f}")
    typer.echo("print target-print.pdf at 100% (check the 100 mm bar), cut target-steel.svg from steel, glue "
               "the steel on a rigid sheet in register and the print on top")


@calibrate_app.command("camera")
def camera_cmd(
    images: list[Path] = typer.Argument(..., help="photos of the ChArUco board in varied poses"),
    calibration: Path = typer.Option(DEFAULT_CAL, "--calibration", "-c", help="calibration YAML to write"),
    board: Path | None = typer.Option(None, help="target.yaml from `calibrate target` (default: standard board)"),
    squares_x: int | None = typer.Option(None, help="override: squares across"),
    squares_y: int | None = typer.Option(None, help="override: squares down"),
    square_mm: float | None = typer.Option(None, help="override: square side (mm)"),
    marker_mm: float | None = typer.Option(None, help="override: marker side (mm)"),
    dictionary: str | None = typer.Option(None, help="override: ArUco dictionary name"),
    max_rms_px: float = typer.Option(1.0, help="refuse to save above this reprojection RMS (px)"),
) -> None:
    """Intrinsics and lens distortion from ChArUco views; replaces the intrinsics (and drops a stale homography).

    Example: edge calibrate camera views/*.png -c /var/lib/edge/calibration/camera.yaml
    """
    g = geometry_or_exit(board)
    spec = BoardSpec(squares_x or g.squares_x, squares_y or g.squares_y, square_mm or g.square_mm,
                     marker_mm or g.marker_mm, dictionary or g.dictionary)
    try:
        rep = calibrate_intrinsics(read_views([str(p) for p in images]), spec)
    except (CalibrationError, ValueError) as exc:
        raise _fail(str(exc)) from None
    for v in rep.views:
        state = f"{v.rms_px:.3f} px" if v.rms_px is not None else f"skipped: {v.skipped}"
        typer.echo(f"  {v.name}: {v.corners} corners, {state}")
    i = rep.intrinsics
    k = i.camera_matrix
    typer.echo(f"fx={k[0, 0]:.2f} fy={k[1, 1]:.2f} cx={k[0, 2]:.2f} cy={k[1, 2]:.2f} "
               f"dist={[round(float(x), 5) for x in i.dist_coeffs]}")
    typer.echo(f"reprojection RMS {i.accuracy.rms_px:.3f} px, max {i.accuracy.max_px:.3f} px")
    if i.accuracy.rms_px > max_rms_px:
        raise _fail(f"RMS {i.accuracy.rms_px:.3f} px exceeds {max_rms_px} px; not saved", 1)
    target = {**geometry_to_dict(g), "squares_x": spec.squares_x, "squares_y": spec.squares_y,
              "square_mm": spec.square, "marker_mm": spec.marker, "dictionary": spec.dictionary}
    kept = calfile.save(calfile.CameraCalibration(i, None, target), calibration)
    typer.echo(f"saved {calibration}" + (f" (previous kept as {kept}; its homography must be redone)" if kept else ""))


@calibrate_app.command("homography")
def homography_cmd(
    capture: Path = typer.Argument(..., help="capture-set directory (capture.yaml, X-ray scan, camera frames)"),
    calibration: Path = typer.Option(DEFAULT_CAL, "--calibration", "-c", help="calibration YAML (has intrinsics)"),
    board: Path | None = typer.Option(None, help="target.yaml of the target used (default: standard board)"),
    max_rms_px: float = typer.Option(2.0, help="refuse to save above this RMS error (camera px)"),
    max_error_px: float = typer.Option(5.0, help="refuse to save if any inlier is off by more (camera px)"),
    overlay: Path | None = typer.Option(None, help="overlay picture to write (default: beside the calibration)"),
    residuals: bool = typer.Option(False, "--residuals", help="print every point's residual"),
    dry_run: bool = typer.Option(False, "--dry-run", help="report only, do not save"),
) -> None:
    """Homography X-ray → camera from the target passing through; reports px and mm errors and an overlay.

    Example: edge calibrate homography /data/pass-01 -c /var/lib/edge/calibration/camera.yaml
    """
    g = geometry_or_exit(board)
    try:
        cal = calfile.load(calibration)
        cap = load_capture_set(capture)
        rep = estimate_homography(cap, cal.intrinsics, board_spec(g), g.thickness_mm)
    except CalibrationError as exc:
        raise _fail(str(exc)) from None
    acc = rep.homography.accuracy
    typer.echo(f"{rep.xray_corners} corners in X-ray, {acc.points} matched over {len(rep.frames_used)} frames, "
               f"{acc.inliers} inliers")
    typer.echo(f"RMS {acc.rms_px:.3f} px ({acc.rms_mm or 0:.3f} mm), max {acc.max_px:.3f} px "
               f"({acc.max_mm or 0:.3f} mm)")
    if residuals:
        for r in rep.residuals:
            typer.echo(f"  id {r.corner_id:3d} {r.frame}: {r.error_px:.3f} px {r.error_mm:.3f} mm"
                       + ("" if r.inlier else " (outlier)"))
    new = calfile.CameraCalibration(cal.intrinsics, rep.homography, {**cal.target, **geometry_to_dict(g)})
    pic = overlay or calibration.with_name(calibration.stem + "-overlay.png")
    pic.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(pic), overlay_picture(cap, CameraMapper(new), rep.residuals))
    typer.echo(f"overlay picture: {pic} (check that the magenta X-ray pattern lies on the print)")
    why = check_thresholds(acc, max_rms_px, max_error_px)
    if why:
        raise _fail("refused to save: " + "; ".join(why), 1)
    if dry_run:
        typer.echo("dry run: not saved")
        return
    kept = calfile.save(new, calibration)
    typer.echo(f"saved {calibration}" + (f" (previous kept as {kept})" if kept else ""))


@calibrate_app.command("check")
def check_cmd(
    capture: Path = typer.Argument(..., help="capture-set directory of a new pass of the target"),
    calibration: Path = typer.Option(DEFAULT_CAL, "--calibration", "-c", help="calibration YAML to check"),
    board: Path | None = typer.Option(None, help="target.yaml of the target used (default: standard board)"),
    max_rms_px: float = typer.Option(2.0, help="fail above this RMS error of the stored mapping (px)"),
    max_drift_px: float = typer.Option(3.0, help="fail if a fresh estimate moves any point more (px)"),
    overlay: Path | None = typer.Option(None, help="write the stored mapping's overlay picture on this pass here"),
) -> None:
    """Re-measure the stored mapping on a new pass and report drift; exit 1 when out of tolerance.

    With --overlay, the picture `calibrate homography` draws, but for the *stored* mapping on this pass: if the
    camera moved, the magenta X-ray pattern sits off the print and the yellow residuals are long.

    Example: edge calibrate check /data/pass-02 -c /var/lib/edge/calibration/camera.yaml --overlay /tmp/check.png
    """
    g = geometry_or_exit(board)
    try:
        cal = calfile.load(calibration)
        cap = load_capture_set(capture)
        rep = check_calibration(cal, cap, board_spec(g), max_rms_px, max_drift_px)
        if overlay is not None:
            mapper = CameraMapper(cal)
            overlay.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(overlay), overlay_picture(cap, mapper, residuals_of(mapper, match_corners(
                cap, board_spec(g)))))
            typer.echo(f"overlay picture: {overlay} (the stored mapping on this pass)")
    except CalibrationError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"stored accuracy:   RMS {rep.stored.rms_px:.3f} px ({rep.stored.rms_mm or 0:.3f} mm)")
    typer.echo(f"measured now:      RMS {rep.measured.rms_px:.3f} px ({rep.measured.rms_mm or 0:.3f} mm), "
               f"max {rep.measured.max_px:.3f} px over {rep.measured.points} points")
    typer.echo(f"drift of a fresh estimate: {rep.drift_px:.3f} px ({rep.drift_mm:.3f} mm)")
    if not rep.passed:
        raise _fail("; ".join(rep.reasons), 1)
    typer.echo("OK")


# Flat-field and effective-Z calibration live beside the conditioning code they feed.
calibrate_app.command("flatfield")(flatfield_command)
calibrate_app.command("energy")(energy_command)
# The rehearsal: the files the camera commands read, made by the virtual scanner (docs/commissioning.md).
calibrate_app.add_typer(rehearse_app, name="rehearse")
