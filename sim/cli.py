"""Command line of the virtual scanner: ``edge sim generate`` (wired into ``edge`` by the lead's ``edge/cli.py``).

Where it sits: a thin typer layer over ``sim/dataset.py`` and ``sim/gallery.py``; arguments in, config built,
work run with a tqdm progress bar. Must not: hold logic beyond argument checking.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from sim.scene import Preset

_REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "xray"
sim_app = typer.Typer(help="The virtual dual-energy X-ray scanner: generate labelled datasets.", no_args_is_help=True)


@sim_app.command()
def generate(
    n: int = typer.Option(..., "--n", min=1, help="number of items to generate"),
    seed: int = typer.Option(0, "--seed", min=0, help="dataset seed; the same seed gives the same dataset"),
    out: Path = typer.Option(..., "--out", help="output directory (must be new or empty)"),
    threat_rate: float = typer.Option(0.2, "--threat-rate", min=0.0, max=1.0,
                                      help="probability that an item carries a threat"),
    preset: Preset = typer.Option(Preset.PARCELS, "--preset", help="kind of items: parcels, baggage or electronics"),
    workers: int = typer.Option(min(2, os.cpu_count() or 1), "--workers", min=1,
                                help="worker processes (default: both cores)"),
    camera: bool = typer.Option(True, "--camera/--no-camera", help="also render the exit-camera frame per item"),
) -> None:
    """Generate a dataset: raw 16-bit high/low PNGs, pseudo-colour previews, camera JPEGs, COCO JSON, events.

    Example: edge sim generate --n 100 --seed 1 --out /tmp/sim100 --threat-rate 0.3 --preset baggage
    """
    from tqdm import tqdm

    from sim.dataset import GenerateConfig
    from sim.dataset import generate as run

    try:
        config = GenerateConfig(n=n, seed=seed, preset=preset, threat_rate=threat_rate, camera=camera,
                                workers=workers)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        with tqdm(total=n, unit="item", desc="sim generate") as bar:
            summary = run(config, out, progress=bar.update)
    except FileExistsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {summary['n']} items ({summary['threat_items']} with threats, "
               f"{summary['annotations']} objects) to {out}")


@sim_app.command()
def gallery(
    out: Path = typer.Option(Path("docs/img/sim-gallery.png"), "--out", help="PNG to write"),
    seed: int = typer.Option(3, "--seed", min=0, help="seed of the 12 generated items"),
    realdata: Path = typer.Option(_REALDATA, "--realdata", help="folder of real X-ray images (not committed)"),
) -> None:
    """Render the documentation gallery: 12 simulated previews beside 4 real scanner images.

    Example: edge sim gallery --out docs/img/sim-gallery.png
    """
    from sim.gallery import build_gallery

    try:
        path = build_gallery(out, seed=seed, realdata=realdata)
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {path}")
