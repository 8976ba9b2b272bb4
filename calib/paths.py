"""Where `edge calibrate flatfield|energy` write by default: the paths the service's config names."""

from __future__ import annotations

from pathlib import Path

import typer

from edge.config.condition import ConditionConfig


def condition_path(config: Path | None, key: str) -> Path:
    """``condition.<key>`` of the edge config (or the built-in default when no config is given).

    An invalid ``config`` prints every problem and exits with code 2.
    """
    if config is None:
        return Path(getattr(ConditionConfig(), key))
    from edge.config import load_config
    from edge.errors import ConfigError

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(code=2) from None
    return Path(getattr(cfg.condition, key))
