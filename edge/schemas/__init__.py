"""JSON Schema files of every MQTT payload, shipped in the package, and a loader for them.

One file per schema name and major version: ``xray-edge/item@2`` is ``item-2.schema.json``. ``alarm-2`` refers to
definitions in ``item-2.schema.json``, ``status`` and ``health`` to ``item-1.schema.json``, by relative
``$ref``; ``validator`` resolves those from this folder (no network). Subscribers may copy the files; the tests
check every payload the publisher builds against them. Importing this module reads nothing.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

SCHEMA_NAMES = ("xray-edge/item@2", "xray-edge/alarm@2", "xray-edge/item@1", "xray-edge/alarm@1",
                "xray-edge/status@1", "xray-edge/health@1")
"""Item and alarm records are version 2 since issue 32 (alarm reasons); version 1 stays shipped for subscribers
that still validate it (docs/mqtt.md says what changed)."""


def file_name(schema: str) -> str:
    """``xray-edge/item@1`` -> ``item-1.schema.json``; ValueError for a name this package does not ship."""
    if schema not in SCHEMA_NAMES:
        raise ValueError(f"unknown payload schema {schema!r}; expected one of {', '.join(SCHEMA_NAMES)}")
    kind, version = schema.removeprefix("xray-edge/").split("@")
    return f"{kind}-{version}.schema.json"


def load(schema: str) -> dict[str, Any]:
    """The JSON Schema document of one payload schema name."""
    text = resources.files(__package__).joinpath(file_name(schema)).read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def validator(schema: str) -> Any:
    """A ``jsonschema`` Draft 2020-12 validator for ``schema`` with the sibling files registered for ``$ref``."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    documents = {name: load(name) for name in SCHEMA_NAMES}
    registry: Registry[Any] = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in documents.values()
    )
    return Draft202012Validator(documents[schema], registry=registry)
