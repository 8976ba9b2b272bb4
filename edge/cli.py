"""The ``edge`` command: thin typer wiring. Arguments in, config loaded, objects built and run.

Sub-commands live with the package that implements them (``calib.cli``, ``sim.cli``, ``edge_tools.watch`` …) and
are mounted here; a command appears in ``--help`` only once it really works.
"""

from __future__ import annotations

from pathlib import Path

import typer

from calib.cli import calibrate_app
from edge.config import DEFAULT_CONFIG_PATH, load_config
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
    help="xray-edge: screen every item of a dual-energy X-ray scanner and publish decisions over MQTT.",
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


@app.command()
def check(
    config: Path = typer.Option(DEFAULT_CONFIG_PATH, "--config", "-c", help="config file to validate"),
    no_preflight: bool = typer.Option(False, "--no-preflight",
                                      help="validate the file only, e.g. on another machine than the box: skip "
                                           "bundles, calibrations, devices and folders"),
) -> None:
    """Validate a config file and preflight the box; print every problem as file:line: key: message, exit 1 if any.

    Besides the file itself (keys, values, duplicate keys, topic prefix), the preflight checks that bundles exist,
    verify and are signed by a trusted key; that calibrations exist and load; that the serial port and camera
    exist; that the source and state folders are writable; and that the models can raise an alarm at all. Run it
    as the service's user (sudo -u edge ...): writability depends on who asks.

    Example: sudo -u edge edge check --config /etc/edge/edge.yaml
    """
    from edge.config.preflight import preflight, run_refusals

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        for line in exc.problems:
            typer.echo(line, err=True)
        raise typer.Exit(code=1) from None
    problems = run_refusals(cfg, config) if no_preflight else preflight(cfg, config)
    for problem in problems:
        typer.echo(str(problem), err=True)
    errors = [p for p in problems if not p.warning]
    if errors:
        typer.echo(f"{config}: {len(errors)} problem{'s' if len(errors) > 1 else ''}", err=True)
        raise typer.Exit(code=1)
    what = "file only (--no-preflight)" if no_preflight else "file and box"
    typer.echo(f"{config}: ok, {what} (site {cfg.site.site_id}, scanner {cfg.site.scanner_id}, "
               f"source {cfg.source.type})")


@app.command()
def run(
    config: Path = typer.Option(DEFAULT_CONFIG_PATH, "--config", "-c", help="config file"),
    log_level: str | None = typer.Option(None, "--log-level", help="override logging.level (debug|info|...)"),
) -> None:
    """Run the screening service (systemd runs this; SIGHUP reloads, SIGTERM stops cleanly).

    Example: edge run --config /etc/edge/edge.yaml --log-level debug
    """
    from edge.errors import EdgeError
    from edge.service import run_service

    try:
        code = run_service(config, log_level)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(code=1) from None
    except EdgeError as exc:
        typer.echo(f"edge run: cannot start: {exc}", err=True)
        raise typer.Exit(code=1) from None
    raise typer.Exit(code=code)


@app.command()
def status(
    config: Path = typer.Option(DEFAULT_CONFIG_PATH, "--config", "-c", help="config file of the running service"),
    as_json: bool = typer.Option(False, "--json", help="print the raw status JSON"),
    stale_s: float = typer.Option(5.0, help="a status older than this means the service is not running"),
) -> None:
    """Show the running service's state: links, queues, recent decisions, versions. Exit 1 if it is not running.

    Example: edge status --config /etc/edge/edge.yaml
    """
    import json
    import time

    from edge.status import format_status, read_status

    try:
        path = load_config(config).service.status_file
        data = read_status(path)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(code=1) from None
    except (OSError, ValueError) as exc:
        typer.echo(f"edge status: no status from the service ({exc}); is it running?", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(json.dumps(data, indent=2) if as_json else format_status(data))
    age = time.time() - float(data["written_wall"])
    if age > stale_s or data["state"] == "offline":
        typer.echo(f"edge status: status is {age:.0f} s old or offline: the service is not running", err=True)
        raise typer.Exit(code=1)


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


@app.command()
def version() -> None:
    """Print the xray-edge version and the inference libraries it runs on.

    Example: edge version
    """
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg_version

    for name in ("xray-edge", "numpy", "opencv-python-headless", "onnxruntime", "openvino", "paho-mqtt"):
        try:
            typer.echo(f"{name} {pkg_version(name)}")
        except PackageNotFoundError:
            typer.echo(f"{name} not installed")


def main() -> None:
    """Console-script entry point."""
    app()
