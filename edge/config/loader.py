"""Load one YAML config file and report every problem as ``file:line: key.path: what; what is valid``.

YAML is composed once into nodes so that every key keeps its line; the plain data is validated by pydantic;
each pydantic error's ``loc`` is mapped back to the line of that key (or of its parent mapping when the key is
missing). All problems are reported at once, sorted by line, so an engineer fixes a file in one pass.

A key given twice in one mapping, at any depth, is refused with the lines of both: plain YAML keeps the last value
and drops the first without a word (a second ``models:`` block pasted below the first once removed the scorer, and
the box cleared everything).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from edge.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]
Check = Callable[[Any], list[tuple[Loc, str]]]
"""A cross-section rule: takes the validated model, returns (key path, message) for each violation."""


def _line_map(node: yaml.Node, prefix: Loc, lines: dict[Loc, int], duplicates: list[tuple[Loc, int, int]],
              path: frozenset[int] = frozenset()) -> None:
    """Record the 1-based line of every key (and list item) under ``node``, and every key given twice.

    A key repeated in one mapping is recorded in ``duplicates`` as (key path, line of the repeat, line of the
    first): YAML keeps only the last value and drops the first without a word, which is how a second
    ``models:`` block pasted below the first once removed the scorer. ``path`` holds the nodes above this one,
    so an alias that refers to its own ancestor cannot recurse for ever.
    """
    if id(node) in path:
        return
    path = path | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key, str):  # a complex (mapping or list) key: no pydantic field can match it
                continue
            loc = (*prefix, key)
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":  # '<<' is YAML's merge key, repeated on purpose
                duplicates.append((loc, line, seen[key]))
            seen.setdefault(key, line)
            lines[loc] = line  # the last occurrence is the value YAML keeps, so errors point there
            _line_map(value_node, loc, lines, duplicates, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            loc = (*prefix, index)
            lines[loc] = item.start_mark.line + 1
            _line_map(item, loc, lines, duplicates, path)


def key_lines(path: Path) -> dict[Loc, int]:
    """The 1-based line of every key path in the YAML file at ``path``; empty when it cannot be read or parsed.

    For checks that run after loading (``edge.config.preflight``) and report in the loader's format.
    """
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    lines: dict[Loc, int] = {}
    if node is not None:
        _line_map(node, (), lines, [])
    return lines


def line_for(loc: Loc, lines: Mapping[Loc, int]) -> int:
    """The line of ``loc`` or of its nearest ancestor that the file actually has (line 1 for the root).

    A part the file does not have is passed over, so a discriminated union's tag (``sim`` in
    ``source.sim.seed``, which pydantic puts in the path) still finds ``source.seed``'s line."""
    found: Loc = ()
    for part in loc:
        if (*found, part) in lines:
            found = (*found, part)
    return lines[found] if found else 1


def _field_at(model: type[BaseModel], loc: Loc) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """Walk ``loc`` through nested models; return the owning model and field info of the last key."""
    current: Any = model
    owner: type[BaseModel] | None = None
    info: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            # Discriminated unions and containers: look through the annotation's arguments for a model.
            candidates = [a for a in getattr(current, "__args__", ()) if isinstance(a, type)]
            models = [a for a in candidates if issubclass(a, BaseModel) and part in a.model_fields]
            if not models:
                return owner, None
            current = models[0]
        if part not in current.model_fields:
            return current, None
        owner = current
        info = current.model_fields[part]
        current = info.annotation
    return owner, info


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a value of ``annotation`` may be: the model itself, or those inside an optional, a union, a
    list or a mapping (``CropModelEntry | None``, ``tuple[Rule, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()):
        found += [m for m in _models_in(arg) if m not in found]
    return found


def _models_at(root: type[BaseModel], loc: Loc) -> list[type[BaseModel]]:
    """The models the mapping at ``loc`` may be (list indexes and a discriminated union's tag are looked through),
    so an unknown key is answered with the keys of the section it was written in."""
    current = [root]
    for part in loc:
        owners = [m for m in current if isinstance(part, str) and part in m.model_fields]
        if not owners:
            # A discriminated union's tag ('sim' in source.sim.seed) picks the kind whose Literal field holds it;
            # a list index or a mapping's key leaves the same models to hold the next key.
            tagged = [m for m in current if any(part in getattr(f.annotation, "__args__", ())
                                                for f in m.model_fields.values())]
            current = tagged or current
            continue
        current = _models_in(owners[0].model_fields[str(part)].annotation)
        if not current:
            return []
    return current


def _bounds(info: FieldInfo | None) -> tuple[Any, Any]:
    lo: Any = None
    hi: Any = None
    if info is not None:
        for meta in info.metadata:
            lo = getattr(meta, "ge", None) if getattr(meta, "ge", None) is not None else lo
            lo = getattr(meta, "gt", None) if lo is None and getattr(meta, "gt", None) is not None else lo
            hi = getattr(meta, "le", None) if getattr(meta, "le", None) is not None else hi
            hi = getattr(meta, "lt", None) if hi is None and getattr(meta, "lt", None) is not None else hi
    return lo, hi


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "str": "a string",
    "path": "a path (string)",
    "dict": "a mapping of keys",
    "model": "a mapping of keys",
    "list": "a list",
    "tuple": "a list",
    "none": "nothing (leave the key out)",
}


def _describe(error: Mapping[str, Any], root: type[BaseModel]) -> str:
    """Turn one pydantic error into 'what was found; what is valid'."""
    kind = error["type"]
    loc: Loc = tuple(error["loc"])
    got = error.get("input")
    ctx = error.get("ctx") or {}
    _, info = _field_at(root, loc)
    if kind == "extra_forbidden":
        name = str(loc[-1])
        valid = sorted({key for model in _models_at(root, loc[:-1]) for key in model.model_fields})
        hint = difflib.get_close_matches(name, valid, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"unknown key '{name}'{suggestion}; valid keys: {', '.join(valid)}"
    if kind == "missing":
        expected = info.description if info is not None and info.description else "a value"
        return f"required key is missing; expected {expected}"
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        lo, hi = _bounds(info)
        if lo is not None and hi is not None:
            return f"must be {lo}..{hi}, got {got!r}"
        return f"{error['msg'].lower()}, got {got!r}"
    if kind in {"literal_error", "enum"}:
        expected = str(ctx.get("expected", ""))
        options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        hint = difflib.get_close_matches(str(got), options, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"{got!r} is not valid; expected {expected}{suggestion}"
    if kind == "union_tag_invalid":
        tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        hint = difflib.get_close_matches(str(ctx.get("tag")), tags, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"{ctx.get('tag')!r} is not valid; expected one of {ctx.get('expected_tags')}{suggestion}"
    if kind == "union_tag_not_found":
        key = str(ctx.get("discriminator", "type")).strip("'")  # pydantic quotes it already: ''type''
        return f"key '{key}' is missing; it selects the kind of this section"
    if kind.endswith("_parsing") or kind.endswith("_type"):
        base = kind.removesuffix("_parsing").removesuffix("_type")
        expected = _TYPE_WORDS.get(base, base.replace("_", " "))
        return f"expected {expected}, got {got!r}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return f"{error['msg']}, got {got!r}"


def format_loc(loc: Loc) -> str:
    """``("models", "scorer")`` -> ``models.scorer``; list items as ``[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def load_yaml_model(path: Path, model: type[M], checks: Sequence[Check] = ()) -> M:
    """Read ``path`` and validate it as ``model``; raise :class:`ConfigError` listing every problem.

    Raises:
        ConfigError: the file is missing, is not YAML, is not a mapping, or fails validation. Each problem is
            one line ``<file>:<line>: <key.path>: <what is wrong>; <what is valid>``.
    """
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}:1: <file>: cannot read ({exc.strerror})"]) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{path}:{line}: <file>: byte {raw[exc.start]:#04x} is not UTF-8 text; expected a YAML "
                           "file in UTF-8"]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{name}:{line}: <yaml>: {problem}"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{name}:1: <root>: expected a mapping of sections, got {type(data).__name__}"])
    lines: dict[Loc, int] = {}
    duplicates: list[tuple[Loc, int, int]] = []
    if node is not None:
        _line_map(node, (), lines, duplicates)
    problems: list[tuple[int, str]] = [
        (line, f"{name}:{line}: {format_loc(loc)}: duplicate key (first at line {first}); each key may appear once "
               "in its block: YAML keeps only the last and silently drops the first, so merge the two into one")
        for loc, line, first in duplicates]
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            if error["type"] in {"union_tag_invalid", "union_tag_not_found"}:
                loc = (*loc, str((error.get("ctx") or {}).get("discriminator", "type")).strip("'"))
            line = line_for(loc, lines)
            problems.append((line, f"{name}:{line}: {format_loc(loc)}: {_describe(error, model)}"))
        problems.sort(key=lambda p: p[0])
        raise ConfigError([p for _, p in problems]) from exc
    # Duplicates are refused even when the rest validates: it may validate only because YAML dropped a block.
    found = problems + [(line_for(loc, lines), f"{name}:{line_for(loc, lines)}: {format_loc(loc)}: {message}")
                        for check in checks for loc, message in check(result)]
    if found:
        found.sort(key=lambda p: p[0])
        raise ConfigError([p for _, p in found])
    return result
