"""The tool commands of ``edge``: commissioning, evaluation, benchmarks, on-site refit, the demo, the MQTT
watcher, DICOS inspection and the virtual scanner.

Why a module apart from ``edge.cli``: these commands pull in the virtual scanner (``sim``), the simulated
firmware, the evaluation harness and the commissioning code, none of which the service on the box may load.
``edge.cli`` names this module in its table of tool commands and imports it only when one of them is invoked,
so ``edge run`` starts without any of it. Each command is written (or mounted) here exactly as before; the
table in ``edge.cli`` must list the same names (tests/foundation/test_import_rules.py checks both agree).
"""

from __future__ import annotations

from pathlib import Path

import typer

from calib.cli import calibrate_app
from console.cli import console_app
from edge.config import DEFAULT_CONFIG_PATH
from edge.errors import ConfigError
from edge_tools.bench.cli import bench_command
from edge_tools.dicos_cli import dicos_app
from edge_tools.eval.cli import eval_command
from edge_tools.watch import watch
from firmware_bridge.cli import firmware as sim_firmware
from sim.cli import sim_app

REFERENCE_MODELS = Path(__file__).resolve().parents[1] / "models"

app = typer.Typer(
    name="edge",
    help="The tool commands of xray-edge (mounted lazily under the `edge` command).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.add_typer(dicos_app, name="dicos")
app.add_typer(calibrate_app, name="calibrate")
app.command(name="watch")(watch)
sim_app.command("firmware")(sim_firmware)
app.add_typer(sim_app, name="sim")
app.command(name="eval")(eval_command)
app.command(name="bench")(bench_command)
app.add_typer(console_app, name="console")


@app.command()
def demo(
    out: Path = typer.Option(Path("/tmp/xray-edge-demo"), "--out", help="working folder (config, overlays, audit)"),
    items: int = typer.Option(0, "--items", help="stop after this many items (0 = run until Ctrl-C)"),
    per_minute: float = typer.Option(30.0, "--per-minute", help="items per minute from the virtual scanner"),
    seed: int = typer.Option(0, "--seed", help="virtual scanner seed"),
    models: Path = typer.Option(REFERENCE_MODELS, "--models",
                                help="folder holding detector-agnostic/ and scorer-stfpm/ bundles"),
) -> None:
    """Run everything here: virtual scanner and firmware, calibrations, the service, a broker, a subscriber.

    The service screens with the reference bundles in models/ and the subscriber prints each decision and saves
    the overlay pictures.

    Example: edge demo --items 20 --out /tmp/xray-edge-demo
    """
    from edge.logs import setup_logging
    from edge_tools.demo import run_demo

    setup_logging("warning", "logfmt")
    raise typer.Exit(code=run_demo(out, items or None, per_minute, seed, models, typer.echo))


@app.command()
def fit(
    audit: Path = typer.Option(..., "--from", help="audit store folder (the config's audit.directory)"),
    since: str = typer.Option(..., "--since", help="first decision date, YYYY-MM-DD or ISO date-time (UTC)"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for the new bundle (must not exist)"),
    config: Path = typer.Option(DEFAULT_CONFIG_PATH, "--config", "-c",
                                help="the service's config: calibrations, detector, scorer bundle"),
    until: str | None = typer.Option(None, "--until", help="decisions before this date-time only"),
    bundle: Path | None = typer.Option(None, "--bundle", help="PaDiM bundle to refit (default: models.scorer)"),
    holdout: float = typer.Option(0.2, help="fraction of the items held out to set the threshold"),
    min_objects: int = typer.Option(50, help="fewest benign objects the Gaussian may be fitted on"),
    seed: int = typer.Option(0, help="seed of the held-out item split"),
    threads: int = typer.Option(2, help="inference threads"),
    bundle_version: str | None = typer.Option(None, "--version", help="version of the new bundle "
                                              "(default: <old>-site.<YYYYMMDD>)"),
    force: bool = typer.Option(False, "--force", help="replace --out if it already holds a bundle"),
) -> None:
    """Refit the PaDiM scorer from benign (CLEAR) items the service saved on site; write a new verified bundle.

    Needs `audit: save_inputs: true` while the items were screened. Prints a JSON summary; see docs/fit.md.

    Example: edge fit --from /var/lib/edge/audit --since 2026-11-01 -o /var/lib/edge/models/padim-site
    """
    import json

    from edge.errors import EdgeError
    from edge_tools.fit.records import parse_date
    from edge_tools.fit.refit import FitSettings, run_fit

    try:
        settings = FitSettings(audit_dir=audit, since=parse_date(since, "--since"), config=config, out=out,
                               until=None if until is None else parse_date(until, "--until"), bundle=bundle,
                               holdout=holdout, min_objects=min_objects, seed=seed, threads=threads,
                               version=bundle_version, force=force)
        result = run_fit(settings, lambda line: typer.echo(line, err=True))
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(code=1) from None
    except EdgeError as exc:
        typer.echo(f"edge fit: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(json.dumps(result.summary(), indent=2))


def main() -> None:
    """Run the tool commands alone (``python -m edge_tools.cli``); ``edge`` mounts the same ones."""
    app()


if __name__ == "__main__":
    main()
