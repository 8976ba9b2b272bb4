"""The ``edge-export`` command: the PyTorch → ONNX → OpenVINO toolchain (torch is imported only here)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="edge-export",
    help="Export PyTorch models to ONNX/OpenVINO bundles with proven parity.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def versions() -> None:
    """Print the toolchain's library versions (recorded in every bundle).

    Example: edge-export versions
    """
    from importlib.metadata import PackageNotFoundError, version

    for name in ("torch", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf"):
        try:
            typer.echo(f"{name} {version(name)}")
        except PackageNotFoundError:
            typer.echo(f"{name} not installed")


@app.callback()
def _root() -> None:
    """Export PyTorch models to ONNX/OpenVINO bundles with proven parity."""


def main() -> None:
    """Console-script entry point."""
    app()
