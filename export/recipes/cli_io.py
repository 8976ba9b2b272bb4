"""How ``edge-export train`` talks: progress on stderr, reports as JSON on stdout, refusals as one line and an exit
status.

Why a module: the command declarations are spread over a few ``cli*`` modules (one per family of commands) and
must all speak alike; the jobs they call raise :class:`~export.errors.RecipeInputError` /
:class:`~export.errors.RecipeOptionError` instead of exiting, and :func:`reported` maps them to typer's exits here.
Must not: import torch or any job module at import time (``edge-export --help`` stays fast).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

from export.errors import RecipeInputError, RecipeOptionError


def fail(why: object) -> NoReturn:
    """Stop a command with ``edge-export: error: <why>`` on stderr and exit status 1 (bad input, not a crash)."""
    typer.echo(f"edge-export: error: {why}", err=True)
    raise typer.Exit(1)


def say(msg: str) -> None:
    """A progress line on stderr."""
    typer.echo(f"train: {msg}", err=True)


def show(report: object) -> None:
    """A command's result on stdout, as indented JSON."""
    typer.echo(json.dumps(report, indent=1))


@contextmanager
def reported() -> Iterator[None]:
    """Run a job: a bad input exits 1 with its message (:func:`fail`), a bad option is typer's usage error (2)."""
    try:
        yield
    except RecipeInputError as exc:
        fail(exc)
    except RecipeOptionError as exc:
        raise typer.BadParameter(str(exc)) from exc
