"""Typer wiring of the condition-stage calibrations: ``flatfield`` and ``energy``.

Where it sits: mounted on the ``edge calibrate`` app (``calib.cli``), e.g.
``calibrate_app.command("flatfield")(flatfield_command)``; this module also offers them as a small app of
their own (``condition_app``) for tests and for mounting as a group.

Must not: hold logic; the commands live in ``calib.flatfield`` and ``calib.energy``.
"""

from __future__ import annotations

import typer

from calib.energy import energy_command
from calib.flatfield import flatfield_command

condition_app = typer.Typer(
    name="condition",
    help="Flat-field and effective-Z calibrations of the dual-energy detector.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
condition_app.command("flatfield")(flatfield_command)
condition_app.command("energy")(energy_command)

__all__ = ["condition_app", "energy_command", "flatfield_command"]
