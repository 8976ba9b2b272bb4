"""The ``edge`` command: thin typer wiring. Arguments in, config loaded, objects built and run.

The service's own commands (``run``, ``check``, ``status``, ``version``) are written here. The tool commands
(``calibrate``, ``demo``, ``eval``, ``bench``, ``fit``, ``watch``, ``dicos``, ``sim``, ``console``) live in
``edge_tools.cli`` and are mounted lazily: :data:`TOOL_COMMANDS` names them with the one-line help that
``edge --help`` shows, and ``edge_tools.cli`` is imported only when one of them is invoked. Why: the tools pull
in the virtual scanner, the simulated firmware, the evaluation harness and the commissioning code, and
``edge run`` (what systemd starts) must load none of it (tests/foundation/test_import_rules.py). This table is
the only place ``edge`` names ``edge_tools``, as a module name and never an import statement, the way
``edge.backends.BACKENDS`` names the inference runtimes.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from edge.config import DEFAULT_CONFIG_PATH, load_config
from edge.errors import ConfigError

TOOLS_MODULE = "edge_tools.cli"
"""The module holding the tool commands (a typer app named ``app``), imported only when one is invoked."""

TOOL_COMMANDS: dict[str, str] = {
    # name: the help text `edge --help` lists (the command's own first paragraph; a test keeps them equal)
    "calibrate": "Commission the scanner: targets, camera, homography, checks.",
    "demo": "Run everything here: virtual scanner and firmware, calibrations, the service, a broker, a subscriber.",
    "dicos": "Inspect DICOS files: threat detection reports (TDR) and DX image pairs.",
    "eval": "Evaluate the service's pipeline (same config, same bundles) on a labelled dataset.",
    "bench": "Per-stage and end-to-end latency (p50/p95/p99), items/s, RSS, load/warm-up time, cold start to READY "
             "and a roofline column per model, for each backend x precision x scorer batch size x threads per model "
             "x pipeline workers.",
    "fit": "Refit the PaDiM scorer from benign (CLEAR) items the service saved on site; write a new verified bundle.",
    "watch": "Watch decisions and alarms live, one line each; de-duplicates redeliveries by record_id.",
    "sim": "The virtual dual-energy X-ray scanner: generate labelled datasets.",
    "console": "The control-room console: live alarm queue of every lane, operator verdicts back to the boxes.",
}

EXAMPLES = """Examples (each command's --help has more):

  edge run --config /etc/edge/edge.yaml

  sudo -u edge edge check --config /etc/edge/edge.yaml

  edge status --config /etc/edge/edge.yaml

  edge version

  edge calibrate target --out /tmp/target --dpi 300

  edge demo --items 20 --out /tmp/xray-edge-demo

  edge dicos show /var/lib/edge/audit/2026-11-22/bag-0042.tdr.dcs

  edge eval /data/bench -c /etc/edge/edge.yaml --out /tmp/eval --workers 2

  edge bench --items 40 --backends openvino --precisions fp32,int8 --batches 8 -o bench.json

  edge fit --from /var/lib/edge/audit --since 2026-11-01 -o /var/lib/edge/models/padim-site

  edge watch --host 127.0.0.1 --port 1883

  edge sim generate --n 100 --seed 1 --out /tmp/sim100

  edge console run --config /etc/edge/console.yaml
"""


class _LazyToolsGroup(TyperGroup):
    """The ``edge`` group: service commands as usual, tool commands from :data:`TOOL_COMMANDS`.

    Help listings get a placeholder per tool (name and help text from the table, nothing imported); invoking a
    tool command, or asking its own ``--help``, imports ``edge_tools.cli`` and runs the real command.
    """

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(name for name in TOOL_COMMANDS if name not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in TOOL_COMMANDS:
            return TyperCommand(cmd_name, help=TOOL_COMMANDS[cmd_name], rich_help_panel="Tools")
        return command

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name in TOOL_COMMANDS and name not in self.commands:
            command = load_tool_command(name)
        return name, command, rest


def load_tool_command(name: str) -> Any:
    """The real tool command ``name`` (a click command or group), importing the tools now.

    A tool whose packages this install lacks (a box installed without the simulator, say) ends with one line
    naming the missing module instead of a traceback.
    """
    try:
        tools = importlib.import_module(TOOLS_MODULE)
    except ImportError as exc:
        typer.echo(f"edge {name}: this install lacks {exc.name or exc} (needed by the tool commands); "
                   "install the package's tools to use it", err=True)
        raise typer.Exit(code=1) from None
    return typer.main.get_group(tools.app).commands[name]


app = typer.Typer(
    name="edge",
    help="xray-edge: screen every item of a dual-energy X-ray scanner and publish decisions over MQTT.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_LazyToolsGroup,
)


@app.command(rich_help_panel="Service")
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


@app.command(rich_help_panel="Service")
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


@app.command(rich_help_panel="Service")
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


@app.command(rich_help_panel="Service")
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
