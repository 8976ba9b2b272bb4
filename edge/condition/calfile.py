"""Calibration files of the condition stage: atomic writes that keep history, and safe YAML reads.

Where it sits: under ``edge.condition.flatfield`` and ``edge.condition.zeff`` (which read the files at start-up)
and ``calib.flatfield`` / ``calib.energy`` (which write them at commissioning). A half-written calibration must
never be read: files are written to a temporary sibling, fsynced and renamed over the old one, and the file
being replaced is first copied to ``history/<stem>.<UTC timestamp><suffix>`` beside it.

Must not: be called on the hot path, or write anywhere but the given path and its ``history/`` folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edge.errors import CalibrationError
from edge.files import atomic_write_bytes, history_dir

__all__ = ["atomic_write_bytes", "atomic_write_yaml", "history_dir", "read_yaml_mapping", "require"]


def atomic_write_yaml(path: Path, document: dict[str, Any], *, keep_history: bool = True) -> Path | None:
    """Write a YAML mapping atomically (block style, keys in the given order)."""
    text = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=110)
    return atomic_write_bytes(path, text.encode("utf-8"), keep_history=keep_history)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every way it can fail into a ``CalibrationError`` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CalibrationError(f"{path}: calibration file not found") from None
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read calibration file: {exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CalibrationError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise CalibrationError(f"{path}: expected a YAML mapping, got {type(doc).__name__}")
    return doc


def require(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    """Fetch ``doc[key]`` checking its type, with a message that names file and key."""
    if key not in doc:
        raise CalibrationError(f"{path}: {key}: missing")
    value = doc[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
        raise CalibrationError(f"{path}: {key}: expected {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__
