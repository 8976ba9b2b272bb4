"""``edge console``: run the control-room console, check its config, manage its users.

Mounted under ``edge`` through ``edge_tools.cli`` (lazily, like every tool). This module imports only typer
and the console's config at import time; the web stack, SQLAlchemy and paho are imported by the command that
needs them, so ``edge --help`` stays fast and a box without the ``console`` extra can still list the command.
"""

from __future__ import annotations

import getpass
import logging
import sys
from pathlib import Path

import typer

from console.config import DEFAULT_CONSOLE_CONFIG, ConsoleConfig, file_problems, load_console_config
from edge.errors import ConfigError

console_app = typer.Typer(
    name="console",
    help="The control-room console: live alarm queue of every lane, operator verdicts back to the boxes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

CONFIG_OPTION = typer.Option(DEFAULT_CONSOLE_CONFIG, "--config", "-c", help="console config file")


def _load(config: Path) -> ConsoleConfig:
    try:
        return load_console_config(config)
    except ConfigError as exc:
        for line in exc.problems:
            typer.echo(line, err=True)
        raise typer.Exit(code=1) from None


def _files_readable(cfg: ConsoleConfig, config: Path) -> None:
    problems = file_problems(cfg, config)
    for line in problems:
        typer.echo(line, err=True)
    if problems:
        raise typer.Exit(code=1)


def _no_database(config: Path, exc: Exception) -> typer.Exit:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    typer.echo(f"{config}: database.url: cannot open the database ({reason})", err=True)
    return typer.Exit(code=1)


def _extra_missing(exc: ImportError) -> typer.Exit:
    typer.echo(f"edge console: this install lacks {exc.name or exc}; install it with pip install "
               "'xray-edge[console]'", err=True)
    return typer.Exit(code=1)


@console_app.command()
def run(config: Path = CONFIG_OPTION) -> None:
    """Serve the console over HTTPS and listen to the configured brokers (systemd runs this).

    Example: edge console run --config /etc/edge/console.yaml
    """
    cfg = _load(config)
    _files_readable(cfg, config)
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from console.service import run_console
    except ImportError as exc:
        raise _extra_missing(exc) from None
    raise typer.Exit(code=run_console(cfg))


@console_app.command()
def check(config: Path = CONFIG_OPTION) -> None:
    """Validate the config file and open the database; print each problem as file:line: key: message.

    Example: edge console check --config /etc/edge/console.yaml
    """
    cfg = _load(config)
    _files_readable(cfg, config)
    try:
        from console.service import open_store
    except ImportError as exc:
        raise _extra_missing(exc) from None
    try:
        counts = open_store(cfg).counts()
    except Exception as exc:
        raise _no_database(config, exc) from None
    typer.echo(f"{config}: ok ({len(cfg.brokers)} broker(s); database holds {counts['items']} items)")


@console_app.command("add-user")
def add_user(
    login: str = typer.Argument(..., help="the operator's login"),
    role: str = typer.Option("operator", "--role", help="operator or supervisor"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from stdin"),
    no_password: bool = typer.Option(False, "--no-password",
                                     help="no password: signs in through the reverse proxy's header only"),
    config: Path = CONFIG_OPTION,
) -> None:
    """Add an operator or supervisor (asks for the password twice unless --password-stdin).

    Example: edge console add-user alice --role supervisor --config /etc/edge/console.yaml
    """
    cfg = _load(config)
    try:
        from sqlalchemy.exc import OperationalError

        from console.auth import hash_password
        from console.service import open_store
        from console.store import StoreError
    except ImportError as exc:
        raise _extra_missing(exc) from None
    hashed = None
    if not no_password:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass(f"password for {login}: ")
            if getpass.getpass("again: ") != password:
                typer.echo("edge console add-user: the passwords differ", err=True)
                raise typer.Exit(code=1)
        try:
            hashed = hash_password(password)
        except ValueError as exc:
            typer.echo(f"edge console add-user: {exc}", err=True)
            raise typer.Exit(code=1) from None
    try:
        open_store(cfg).add_user(login, hashed, role, by=f"cli:{getpass.getuser()}")
    except (OperationalError, OSError) as exc:
        raise _no_database(config, exc) from None
    except StoreError as exc:
        typer.echo(f"edge console add-user: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"added {role} {login}")


@console_app.command("set-password")
def set_password(
    login: str = typer.Argument(..., help="the operator's login"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from stdin"),
    config: Path = CONFIG_OPTION,
) -> None:
    """Set a user's password (a forgotten one; supervisors can also do it on the page).

    Example: edge console set-password alice --config /etc/edge/console.yaml
    """
    cfg = _load(config)
    from sqlalchemy.exc import OperationalError

    from console.auth import hash_password
    from console.service import open_store
    from console.store import StoreError

    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else getpass.getpass(f"password for {login}: ")
    try:
        open_store(cfg).set_password(login, hash_password(password), by=f"cli:{getpass.getuser()}")
    except (OperationalError, OSError) as exc:
        raise _no_database(config, exc) from None
    except (ValueError, StoreError) as exc:
        typer.echo(f"edge console set-password: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"password of {login} set")
