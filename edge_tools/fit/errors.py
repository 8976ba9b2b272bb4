"""The error ``edge fit`` raises for anything the operator must fix (the CLI prints it and exits 1)."""

from __future__ import annotations

from edge.errors import EdgeError


class FitError(EdgeError):
    """``edge fit`` cannot produce a bundle: no usable records, too few objects, an unsuitable bundle …"""
