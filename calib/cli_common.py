"""What the ``edge calibrate`` command modules share: reading a ``--board`` target description or exiting 2.

Where it sits: imported by ``calib.cli`` and ``calib.rehearse_cli`` (which ``calib.cli`` mounts), so neither
copies the other's helpers.
"""

from __future__ import annotations

from pathlib import Path

import typer

from calib.target import load_geometry
from sim.board import TargetGeometry


def geometry_or_exit(board: Path | None) -> TargetGeometry:
    """The target geometry of ``board`` (the default target when None); a bad file prints why and exits 2."""
    if board is None:
        return TargetGeometry()
    try:
        return load_geometry(board)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {board}: {exc}", err=True)
        raise typer.Exit(2) from None
