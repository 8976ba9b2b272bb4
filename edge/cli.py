"""The ``edge`` command: thin typer wiring. Arguments in, config loaded, objects built and run.

Sub-commands live with the package that implements them (``calib.cli``, ``sim.cli``, ``edge.watch`` …) and
are mounted here; a command appears in ``--help`` only once it really works.
"""

from __future__ import annotations

from pathlib import Path

import typer

from edge.config import DEFAULT_CONFIG_PATH, load_config
from edge.dicos.cli import dicos_app
from edge.errors import ConfigError

app = typer.Typer(
    name="edge",
    help="xray-edge: screen every item of a dual-energy X-ray scanner and publish decisions over MQTT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.add_typer(dicos_app, name="dicos")


@app.command()
def check(
    config: Path = typer.Option(DEFAULT_CONFIG_PATH, "--config", "-c", help="config file to validate"),
) -> None:
    """Validate a config file; print every problem as file:line: key: message and exit 1 if any.

    Example: edge check --config /etc/edge/edge.yaml
    """
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"{config}: ok (site {cfg.site.site_id}, scanner {cfg.site.scanner_id}, source {cfg.source.type})")


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
