"""``edge calibrate rehearse views|pass``: the files a lane's camera commissioning reads, made by the virtual scanner.

Why: with them ``edge calibrate camera``, ``homography`` and ``check`` run exactly as on site (same commands, same
files, same reports), so commissioning can be rehearsed and documented without a lane (docs/commissioning.md).
Every command of one rehearsal must describe the same camera (``--scale``, ``--downstream-mm``,
``--camera-seed``); ``--bump-deg`` turns it after calibration, to see what a knocked camera looks like to
``edge calibrate check``. Must not: hold logic (``calib.rehearse`` does the work).
"""

from __future__ import annotations

from pathlib import Path

import typer

from calib.cli_common import geometry_or_exit
from calib.rehearse import RehearsalCamera, write_pass, write_views
from sim.target import TargetPlacement

rehearse_app = typer.Typer(
    help="Rehearse commissioning on the virtual scanner: the camera's ChArUco views and target passes."
         + "\n\nExample: edge calibrate rehearse views --out /tmp/lane/views (then `edge calibrate camera`; "
         "docs/commissioning.md)",
    no_args_is_help=True,
)

_SCALE = typer.Option(1.0, "--scale", help="camera resolution relative to 1280x720 (intrinsics scale with it)")
_DOWNSTREAM = typer.Option(750.0, "--downstream-mm", help="camera optical centre downstream of the X-ray line (mm)")
_CAMERA_SEED = typer.Option(3, "--camera-seed", help="the virtual camera's sensor noise and belt texture")
_BOARD = typer.Option(None, "--board", help="target.yaml from `edge calibrate target` (default: standard board)")


def _camera(scale: float, downstream_mm: float, camera_seed: int, bump_deg: float = 0.0) -> RehearsalCamera:
    try:
        return RehearsalCamera(scale=scale, downstream_mm=downstream_mm, seed=camera_seed, bump_deg=bump_deg)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@rehearse_app.command("views")
def views_cmd(
    out: Path = typer.Option(..., "--out", help="folder for view_NN.png"),
    n: int = typer.Option(12, "--n", min=3, max=60, help="number of poses"),
    seed: int = typer.Option(5, "--seed", help="poses and noise"),
    scale: float = _SCALE,
    downstream_mm: float = _DOWNSTREAM,
    camera_seed: int = _CAMERA_SEED,
    board: Path | None = _BOARD,
) -> None:
    """The target held in front of the exit camera in N poses (tilted, spread over the image), one PNG each.

    Example: edge calibrate rehearse views --out /tmp/lane/views && edge calibrate camera /tmp/lane/views/*.png
    -c /tmp/lane/camera.yaml
    """
    paths = write_views(out, _camera(scale, downstream_mm, camera_seed), geometry_or_exit(board), n=n, seed=seed)
    typer.echo(f"wrote {len(paths)} views to {out} ({paths[0].name} .. {paths[-1].name})")


@rehearse_app.command("pass")
def pass_cmd(
    out: Path = typer.Option(..., "--out", help="capture-set folder to write (capture.yaml, X-ray scan, frames)"),
    x_mm: float = typer.Option(250.0, "--x-mm", help="board centre across the belt, from the channel-0 edge"),
    y_mm: float = typer.Option(220.0, "--y-mm", help="board centre along the belt, from the item's first line"),
    rotation_deg: float = typer.Option(3.0, "--rotation-deg", help="board rotation on the belt"),
    offsets: str = typer.Option("-120,0,120", "--offsets",
                                help="frames taken with the board centre this far (mm) past the view centre"),
    seed: int = typer.Option(1, "--seed", help="scan and frame noise"),
    scanner_seed: int = typer.Option(11, "--scanner-seed", help="the virtual scanner (its detector's fixed pattern)"),
    bump_deg: float = typer.Option(0.0, "--bump-deg", help="turn the camera by this much (a knocked camera)"),
    scale: float = _SCALE,
    downstream_mm: float = _DOWNSTREAM,
    camera_seed: int = _CAMERA_SEED,
    board: Path | None = _BOARD,
) -> None:
    """The target laid on the belt, scanned by the X-ray line and filmed by the exit camera: a capture set.

    Example: edge calibrate rehearse pass --out /tmp/lane/pass-1 && edge calibrate homography /tmp/lane/pass-1
    -c /tmp/lane/camera.yaml
    """
    try:
        shifts = tuple(float(v) for v in offsets.split(",") if v.strip())
    except ValueError:
        typer.echo(f"error: --offsets {offsets!r}: expected comma-separated millimetres", err=True)
        raise typer.Exit(2) from None
    if not shifts:
        typer.echo("error: --offsets: at least one frame", err=True)
        raise typer.Exit(2)
    camera = _camera(scale, downstream_mm, camera_seed, bump_deg)
    meta = write_pass(out, camera, geometry_or_exit(board), TargetPlacement(x_mm, y_mm, rotation_deg),
                      scanner_seed, seed, shifts)
    typer.echo(f"wrote a target pass to {out}: X-ray scan and {len(shifts)} camera frames ({meta.name})")
