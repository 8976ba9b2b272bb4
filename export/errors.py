"""Errors of the export toolchain; the CLI prints their message and exits 1 (no traceback for user errors)."""

from __future__ import annotations


class ExportError(Exception):
    """An export step cannot proceed; the message says why and what to do."""


class QuantizationRefused(ExportError):
    """INT8 lost more of the chosen metric than allowed against FP32 on the validation set."""


class ParityFailed(ExportError):
    """The exported models disagree with the reference beyond tolerance (a bundle needs --force)."""
