"""CLI: ``edge sim firmware`` runs the virtual firmware on a pty and prints the port to connect to.

Thin: typer options in, a timeline and a ``VirtualFirmware`` built, run until Ctrl-C (or ``--duration-s``).
The lead mounts ``firmware`` under ``edge sim``; ``app`` exists so the command can be tested on its own.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from firmware_bridge.scenarios import steady_belt
from firmware_bridge.virtual import DiverterModel, VirtualFirmware

DEFAULT_PORT = Path("/tmp/xray-edge/ttyVFW0")

app = typer.Typer(help="Virtual scanner firmware on a pty.", no_args_is_help=True, add_completion=False)


def firmware(
    port: Annotated[Path, typer.Option(help="symlink to create; point firmware.port at it")] = DEFAULT_PORT,
    speed_mm_s: Annotated[float, typer.Option(min=1.0, help="belt speed in mm/s")] = 200.0,
    counts_per_mm: Annotated[float, typer.Option(min=0.001, help="encoder counts per mm of belt")] = 10.0,
    item_length_mm: Annotated[float, typer.Option(min=1.0, help="length of each item in mm")] = 400.0,
    item_gap_mm: Annotated[float, typer.Option(min=1.0, help="belt gap between items in mm")] = 300.0,
    heartbeat_s: Annotated[float, typer.Option(min=0.01, help="heartbeat period in seconds")] = 0.5,
    duration_s: Annotated[float, typer.Option(min=0.0, help="stop after this many seconds; 0 = until Ctrl-C")] = 0.0,
    diverter_mm: Annotated[float, typer.Option(min=0.0, help="a diverter this far (mm) past the item photo-eye "
                                               "(actions.divert.eye_to_exit_mm + distance_mm); 0 = none")] = 0.0,
    arm_mm: Annotated[float, typer.Option(min=0.0, help="a divert must arrive this far (mm) before the "
                                          "parcel's leading edge reaches the diverter")] = 50.0,
) -> None:
    """Serve the firmware protocol on a pty: a steady belt, items, frames, heartbeats; commands are acked.

    Prints the port (a symlink that survives simulated cable pulls), then runs until Ctrl-C.

    Example:

        edge sim firmware --port /tmp/xray-edge/ttyVFW0 --speed-mm-s 250

    then set ``firmware.port: /tmp/xray-edge/ttyVFW0`` in edge.yaml and run ``edge run``.
    """
    if port.exists() and not port.is_symlink():
        typer.echo(f"error: {port} exists and is not a symlink; choose another --port", err=True)
        raise typer.Exit(code=2)
    timeline = steady_belt(speed_mm_s=speed_mm_s, counts_per_mm=counts_per_mm, item_length_mm=item_length_mm,
                           item_gap_mm=item_gap_mm)
    diverter = None if diverter_mm <= 0 else DiverterModel(round(diverter_mm * counts_per_mm),
                                                           round(arm_mm * counts_per_mm))
    fw = VirtualFirmware(port, timeline, heartbeat_s=heartbeat_s, diverter=diverter)
    fw.start()
    typer.echo(f"virtual firmware listening on {fw.port} (-> {fw.device})")
    typer.echo("press Ctrl-C to stop" if duration_s == 0 else f"running for {duration_s} s")
    try:
        end = None if duration_s == 0 else time.monotonic() + duration_s
        while end is None or time.monotonic() < end:
            time.sleep(0.1 if end is None else max(0.0, min(0.1, end - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        fw.stop()
    typer.echo(f"stopped: {fw.sent} messages sent, {len(fw.commands)} commands carried out")
    if diverter is not None:
        typer.echo(f"diverter: items diverted {[d.item_id for d in fw.diverted]}, passed {fw.passed}")


app.command("firmware")(firmware)


@app.callback()
def _root() -> None:
    """Virtual scanner firmware (sim)."""
