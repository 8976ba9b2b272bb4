"""Every config key is documented in ``systemd/edge.example.yaml``, and the example names no key the models lack.

The keys come from walking the pydantic models under ``EdgeConfig`` (a section's sub-models, every kind of a
discriminated union such as ``source:``); the example's keys are those it sets and those it shows commented out
as ``# key: value`` (optional sections such as ``firmware:`` and ``camera:``, the other source kinds). A key added
to a model without a line in the example, or a line left behind after a key was removed, fails here by name.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from edge.config import EdgeConfig, load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "systemd" / "edge.example.yaml"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[a-z_][a-z0-9_]*):(?:\s|$)")


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The models an annotation can hold: itself, the arms of a union (``X | None``, discriminated unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for arm in typing.get_args(annotation) for m in _models_in(arm)]
    return []


def model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted paths of every key under ``model`` (sections and their keys alike)."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        keys.add(path)
        for sub in _models_in(info.annotation):
            keys |= model_keys(sub, f"{path}.")
    return keys


def example_keys(text: str) -> set[str]:
    """Dotted paths of the keys the example sets or shows commented out (``# key:`` at the key's indentation
    once ``# `` is removed); comment lines that are prose or continuations match no key."""
    keys: set[str] = set()
    stack: list[tuple[int, str]] = []
    for raw in text.splitlines():
        line = raw
        stripped = raw.lstrip(" ")
        if stripped.startswith("#"):
            hash_at = len(raw) - len(stripped)
            line = raw[:hash_at] + stripped[2:] if stripped.startswith("# ") else ""
        match = _KEY.match(line)
        if match is None:
            continue
        indent, key = len(match["indent"]), match["key"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        keys.add(path)
        stack.append((indent, key))
    return keys


def test_every_config_key_is_in_the_example() -> None:
    documented = example_keys(EXAMPLE.read_text(encoding="utf-8"))
    missing = sorted(model_keys(EdgeConfig) - documented)
    assert not missing, f"keys of edge/config/* not in systemd/edge.example.yaml (set or as '# key:'): {missing}"


def test_the_example_names_no_key_the_models_lack() -> None:
    documented = example_keys(EXAMPLE.read_text(encoding="utf-8"))
    unknown = sorted(documented - model_keys(EdgeConfig))
    assert not unknown, f"systemd/edge.example.yaml documents keys no model has: {unknown}"


def test_the_walk_sees_nested_optional_and_union_sections() -> None:
    """Guards the walk itself: an optional section, a sub-model of one, and every source kind."""
    keys = model_keys(EdgeConfig)
    assert {"firmware.port", "mqtt.tls.ca_file", "mqtt.outbox.path", "condition.quality.enabled",
            "source.threat_rate", "source.header_lines", "source.done_directory"} <= keys
    parsed = example_keys("a:\n  b: 1  # c: no\n  # d: 2\n  #   e: 3\n  #        # f: continuation\nx:\n")
    assert parsed == {"a", "a.b", "a.d", "a.d.e", "x"}


def test_the_example_still_loads() -> None:
    assert load_config(EXAMPLE).site.site_id == "hub-north"
