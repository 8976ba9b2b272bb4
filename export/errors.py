"""Errors of the export toolchain; the CLI prints their message and exits 1 (no traceback for user errors)."""

from __future__ import annotations


class ExportError(Exception):
    """An export step cannot proceed; the message says why and what to do."""


class QuantizationRefused(ExportError):
    """INT8 lost more of the chosen metric than allowed against FP32 on the validation set."""


class ParityFailed(ExportError):
    """The exported models disagree with the reference beyond tolerance (a bundle needs --force)."""


class RecipeInputError(Exception):
    """A training recipe's input is wrong (a dataset where a cache is wanted, no shards, a bad label, a checkpoint
    for the other input): ``edge-export train`` prints the message and exits 1.

    Not an :class:`ExportError`: the packing steps under the recipes raise those, and they keep their traceback.
    """


class RecipeOptionError(Exception):
    """A training recipe's option is malformed or does not fit what it names (``--scale 1``, a bundle of the wrong
    kind): ``edge-export train`` reports it as typer's usage error (exit 2)."""
