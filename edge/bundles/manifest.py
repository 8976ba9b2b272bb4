"""The bundle manifest (``bundle.yaml``): its typed form, its JSON Schema, and exact (de)serialisation.

Written by ``export/`` (``edge-export bundle``), read by :mod:`edge.bundles.loader` at runtime. The manifest
carries everything a model needs beyond its weights: role, input contract, output names, thresholds and score
normalisation, classes, provenance and the parity report. ``content_sha256`` is the sha256 of the canonical
JSON of every other key, so editing any value by hand (a threshold, a hash) makes the bundle refuse to load.
This module does no file I/O except reading its own schema file, and never imports torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import numpy as np
import numpy.typing as npt

from edge.bundles.outputs import Role
from edge.contracts import Channel, InputContract, ResizePolicy
from edge.errors import BundleError

SCHEMA_NAME = "xray-edge/bundle"
SCHEMA_VERSION = 1
MANIFEST_FILE = "bundle.yaml"


class ModelFormat(StrEnum):
    """Serialised model format of one file set in a bundle."""

    ONNX = "onnx"
    OPENVINO = "openvino"


class Precision(StrEnum):
    """Numeric precision of a model's weights and compute."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class NormalisationKind(StrEnum):
    """How a raw model score is mapped to the bundle's score scale.

    ``none``: used as is. ``minmax``: ``clip((s - low) / (high - low), 0, 1)``. ``centred`` (anomalib's
    post-processor): ``clip((s - centre) / (high - low) + 0.5, 0, 1)``, so ``centre`` maps to 0.5.
    ``logistic``: ``1 / (1 + exp(-4 (s - centre) / (high - low)))``: ``centre`` maps to 0.5 with the same slope
    as ``centred``, but nothing saturates, so scores far above (or below) the threshold keep their order.
    """

    NONE = "none"
    MINMAX = "minmax"
    CENTRED = "centred"
    LOGISTIC = "logistic"


@dataclass(frozen=True, slots=True)
class ScoreNormalisation:
    """Score normalisation applied by the runtime adapter to scores and anomaly maps (not baked in the graph)."""

    kind: NormalisationKind = NormalisationKind.NONE
    low: float = 0.0
    high: float = 1.0
    centre: float = 0.0

    def __post_init__(self) -> None:
        if self.kind is not NormalisationKind.NONE and not self.high > self.low:
            raise ValueError(f"normalisation needs high > low, got low={self.low} high={self.high}")

    def apply(self, raw: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Map raw scores (any shape) to the bundle scale; returns a new float32 array."""
        x = np.asarray(raw, dtype=np.float32)
        if self.kind is NormalisationKind.NONE:
            return x.copy()
        span = np.float32(self.high - self.low)
        if self.kind is NormalisationKind.MINMAX:
            return np.clip((x - np.float32(self.low)) / span, 0.0, 1.0).astype(np.float32)
        if self.kind is NormalisationKind.LOGISTIC:
            z = np.clip(np.float32(-4.0) * (x - np.float32(self.centre)) / span, -80.0, 80.0)
            return (np.float32(1.0) / (np.float32(1.0) + np.exp(z))).astype(np.float32)
        return np.clip((x - np.float32(self.centre)) / span + np.float32(0.5), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """One graph output: its name in the model file and the role field it fills (None = not used)."""

    name: str
    field: str | None
    shape: tuple[str | int, ...]
    dtype: str


@dataclass(frozen=True, slots=True)
class ParityEntry:
    """How one backend/precision agreed with the reference on the parity inputs.

    ``max_rel`` is the largest absolute error divided by the reference output's largest magnitude (so it
    does not explode near zero); ``decision_agreement`` is the fraction of equal decisions (None for roles or
    runs without a decision rule); ``sha256`` identifies the model file that was checked.
    """

    backend: str
    precision: Precision
    max_abs: float
    max_rel: float
    decision_agreement: float | None
    rtol: float | None
    min_agreement: float | None
    passed: bool
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class ParityReport:
    """Result of ``edge-export verify``: ``reference`` names what every entry was compared with."""

    passed: bool
    reference: str
    samples: int
    entries: tuple[ParityEntry, ...]


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file of the bundle, relative to its folder, with its sha256 and size."""

    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One runnable model: ``path`` is the file to open (``.onnx`` or ``.xml``); ``files`` all it needs."""

    format: ModelFormat
    precision: Precision
    path: str
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DetectorRef:
    """The detector bundle a scorer's ``thresholds.item`` was measured through (bundle.yaml ``item_detector``).

    The item operating point depends on the detector (how many boxes an item gets, how tight), so the service
    compares this with the detector it runs. ``sha256`` is that detector manifest's ``content_sha256`` (which
    covers its model files' hashes); empty when unknown.
    """

    name: str
    version: str
    sha256: str = ""

    @property
    def label(self) -> str:
        """``name@version``, as logs and notes write it."""
        return f"{self.name}@{self.version}"

    @classmethod
    def of(cls, detector: BundleManifest) -> DetectorRef:
        """The reference to a (sealed) detector manifest."""
        return cls(detector.name, detector.version, detector.content_sha256)

    @classmethod
    def parse(cls, label: str, sha256: str = "") -> DetectorRef:
        """From ``name@version`` (what an evaluation report records); raises ValueError on anything else."""
        name, sep, version = label.rpartition("@")
        if not sep or not name or not version:
            raise ValueError(f"{label!r} is not a detector name@version")
        return cls(name, version, sha256)


@dataclass(frozen=True, slots=True)
class BundleManifest:
    """Everything in ``bundle.yaml``. ``content_sha256`` is empty until :func:`seal` fills it."""

    name: str
    version: str
    role: Role
    created_utc: str
    input: InputContract
    outputs: tuple[OutputSpec, ...]
    models: tuple[ModelEntry, ...]
    files: tuple[FileEntry, ...]
    thresholds: Mapping[str, float] = field(default_factory=dict)
    item_detector: DetectorRef | None = None
    """Which detector ``thresholds.item`` was measured through (written by ``edge eval --write-item-threshold``
    and ``edge fit``); None for bundles made before the key existed, whose notes may still say it
    (:func:`item_threshold_detector_of`)."""
    normalisation: ScoreNormalisation = ScoreNormalisation()
    classes: tuple[str, ...] = ()
    threat_classes: Mapping[str, float] = field(default_factory=dict)
    """Detector classes that are threats by themselves, each with the detector score at which it alarms (shared
    contract of issues 31/32: every name one of ``classes``, thresholds in [0, 1]); empty = the detector raises no
    alarm by itself. Written only when non-empty, so bundles made before the key keep their content hash."""
    training_data: str = ""
    notes: str = ""
    toolchain: Mapping[str, str] = field(default_factory=dict)
    parity: ParityReport | None = None
    forced: bool = False
    content_sha256: str = ""
    schema_version: int = SCHEMA_VERSION

    def item_threshold_detector(self) -> str | None:
        """``name@version`` of the detector ``thresholds.item`` was measured through: the ``item_detector`` key,
        or, for bundles made before it (the reference bundles in ``models/``), the ``[item threshold ...;
        detector name@version]`` prefix of ``notes`` (read by regex, a fallback only)."""
        if self.item_detector is not None:
            return self.item_detector.label
        from edge.bundles.outputs import item_threshold_detector

        return item_threshold_detector(self.notes)

    def output_name(self, role_field: str) -> str | None:
        """Graph output name that fills ``role_field``, or None when the model does not provide it."""
        for spec in self.outputs:
            if spec.field == role_field:
                return spec.name
        return None


@cache
def json_schema() -> dict[str, Any]:
    """The JSON Schema of the current ``schema_version`` (shipped as package data)."""
    text = resources.files("edge.bundles").joinpath("bundle.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def contract_to_dict(contract: InputContract) -> dict[str, Any]:
    """The input contract as plain YAML/JSON data (the ``input`` section)."""
    return {
        "input_name": contract.input_name,
        "channels": [str(c) for c in contract.channels],
        "height": contract.height,
        "width": contract.width,
        "resize": str(contract.resize),
        "mean": [float(v) for v in contract.mean],
        "std": [float(v) for v in contract.std],
        "pad_value": float(contract.pad_value),
    }


def contract_from_dict(data: Mapping[str, Any]) -> InputContract:
    """Inverse of :func:`contract_to_dict`; raises ValueError on a contract that breaks its own rules."""
    return InputContract(
        channels=tuple(Channel(c) for c in data["channels"]),
        height=int(data["height"]),
        width=int(data["width"]),
        resize=ResizePolicy(data.get("resize", "stretch")),
        mean=tuple(float(v) for v in data.get("mean", ())),
        std=tuple(float(v) for v in data.get("std", ())),
        pad_value=float(data.get("pad_value", 1.0)),
        input_name=str(data.get("input_name", "input")),
    )


def parity_to_dict(report: ParityReport) -> dict[str, Any]:
    """The parity report as plain data (also the JSON that ``edge-export verify`` writes)."""
    return {
        "passed": report.passed,
        "reference": report.reference,
        "samples": report.samples,
        "entries": [
            {
                "backend": e.backend,
                "precision": str(e.precision),
                "max_abs": float(e.max_abs),
                "max_rel": float(e.max_rel),
                "decision_agreement": None if e.decision_agreement is None else float(e.decision_agreement),
                "rtol": None if e.rtol is None else float(e.rtol),
                "min_agreement": None if e.min_agreement is None else float(e.min_agreement),
                "passed": e.passed,
                "sha256": e.sha256,
            }
            for e in report.entries
        ],
    }


def parity_from_dict(data: Mapping[str, Any]) -> ParityReport:
    """Inverse of :func:`parity_to_dict`."""
    return ParityReport(
        passed=bool(data["passed"]),
        reference=str(data["reference"]),
        samples=int(data["samples"]),
        entries=tuple(
            ParityEntry(
                backend=str(e["backend"]),
                precision=Precision(e["precision"]),
                max_abs=float(e["max_abs"]),
                max_rel=float(e["max_rel"]),
                decision_agreement=None if e["decision_agreement"] is None else float(e["decision_agreement"]),
                rtol=None if e["rtol"] is None else float(e["rtol"]),
                min_agreement=None if e["min_agreement"] is None else float(e["min_agreement"]),
                passed=bool(e["passed"]),
                sha256=str(e.get("sha256", "")),
            )
            for e in data["entries"]
        ),
    )


def manifest_to_dict(m: BundleManifest) -> dict[str, Any]:
    """The manifest as plain data in ``bundle.yaml`` key order."""
    return {
        "schema": SCHEMA_NAME,
        "schema_version": m.schema_version,
        "name": m.name,
        "version": m.version,
        "role": str(m.role),
        "created_utc": m.created_utc,
        "input": contract_to_dict(m.input),
        "outputs": [
            {"name": o.name, "field": o.field, "shape": list(o.shape), "dtype": o.dtype} for o in m.outputs
        ],
        "thresholds": {k: float(v) for k, v in m.thresholds.items()},
        **({} if m.item_detector is None else {"item_detector": {
            "name": m.item_detector.name, "version": m.item_detector.version, "sha256": m.item_detector.sha256}}),
        "normalisation": {
            "kind": str(m.normalisation.kind),
            "low": float(m.normalisation.low),
            "high": float(m.normalisation.high),
            "centre": float(m.normalisation.centre),
        },
        "classes": list(m.classes),
        **({"threat_classes": {k: float(v) for k, v in m.threat_classes.items()}} if m.threat_classes else {}),
        "training_data": m.training_data,
        "notes": m.notes,
        "toolchain": dict(m.toolchain),
        "parity": None if m.parity is None else parity_to_dict(m.parity),
        "forced": m.forced,
        "models": [
            {"format": str(e.format), "precision": str(e.precision), "path": e.path, "files": list(e.files)}
            for e in m.models
        ],
        "files": [{"path": f.path, "sha256": f.sha256, "bytes": f.bytes} for f in m.files],
        "content_sha256": m.content_sha256,
    }


def content_digest(data: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``data`` without its ``content_sha256`` key."""
    body = {k: v for k, v in data.items() if k != "content_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def seal(m: BundleManifest) -> BundleManifest:
    """Return ``m`` with ``content_sha256`` computed; do this last, after every other field is final."""
    from dataclasses import replace

    return replace(m, content_sha256=content_digest(manifest_to_dict(m)))


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def manifest_from_dict(data: Any, source: str = MANIFEST_FILE) -> BundleManifest:
    """Validate plain data against the schema and build the manifest.

    Raises:
        BundleError: naming ``source``, every schema problem found (``key.path: message``), an unknown
            schema version, or a content hash that does not match (the file was edited after sealing).
    """
    if not isinstance(data, Mapping):
        raise BundleError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    if data.get("schema") != SCHEMA_NAME:
        raise BundleError(f"{source}: schema: {data.get('schema')!r} is not an xray-edge bundle; "
                          f"expected {SCHEMA_NAME!r}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{source}: schema_version: {version!r} is not supported; this runtime reads "
                          f"schema_version {SCHEMA_VERSION} (rebuild the bundle with a matching edge-export)")
    validator = jsonschema.Draft202012Validator(json_schema())
    problems = sorted(validator.iter_errors(data), key=lambda e: _where(e))
    if problems:
        lines = "\n".join(f"{source}: {_where(e)}: {e.message}" for e in problems)
        raise BundleError(lines)
    digest = content_digest(data)
    if digest != data["content_sha256"]:
        raise BundleError(f"{source}: content_sha256: the manifest was changed after the bundle was built "
                          f"(content hash {digest[:12]}…, recorded {data['content_sha256'][:12]}…); "
                          "rebuild it with `edge-export bundle` instead of editing bundle.yaml")
    try:
        role = Role(data["role"])
        manifest = BundleManifest(
            schema_version=int(version),
            name=data["name"],
            version=data["version"],
            role=role,
            created_utc=data["created_utc"],
            input=contract_from_dict(data["input"]),
            outputs=tuple(
                OutputSpec(name=o["name"], field=o["field"], shape=tuple(o["shape"]), dtype=o["dtype"])
                for o in data["outputs"]
            ),
            thresholds={k: float(v) for k, v in data["thresholds"].items()},
            item_detector=None if data.get("item_detector") is None else DetectorRef(
                name=str(data["item_detector"]["name"]), version=str(data["item_detector"]["version"]),
                sha256=str(data["item_detector"]["sha256"])),
            normalisation=ScoreNormalisation(
                kind=NormalisationKind(data["normalisation"]["kind"]),
                low=float(data["normalisation"]["low"]),
                high=float(data["normalisation"]["high"]),
                centre=float(data["normalisation"]["centre"]),
            ),
            classes=tuple(data["classes"]),
            threat_classes={str(k): float(v) for k, v in (data.get("threat_classes") or {}).items()},
            training_data=data["training_data"],
            notes=data.get("notes", ""),
            toolchain=dict(data["toolchain"]),
            parity=None if data["parity"] is None else parity_from_dict(data["parity"]),
            forced=bool(data["forced"]),
            models=tuple(
                ModelEntry(format=ModelFormat(e["format"]), precision=Precision(e["precision"]),
                           path=e["path"], files=tuple(e["files"]))
                for e in data["models"]
            ),
            files=tuple(FileEntry(path=f["path"], sha256=f["sha256"], bytes=int(f["bytes"]))
                        for f in data["files"]),
            content_sha256=data["content_sha256"],
        )
    except ValueError as exc:
        raise BundleError(f"{source}: {exc}") from exc
    check_consistency(manifest, source)
    return manifest


def check_consistency(m: BundleManifest, source: str = MANIFEST_FILE) -> None:
    """Cross-field rules the schema cannot express; raises BundleError naming every broken one."""
    from edge.bundles.outputs import required_fields

    problems: list[str] = []
    provided = {o.field for o in m.outputs if o.field is not None}
    for name in required_fields(m.role):
        if name not in provided:
            problems.append(f"outputs: no output fills {name!r}, which a {m.role} bundle must provide")
    fields_seen = [o.field for o in m.outputs if o.field is not None]
    if len(fields_seen) != len(set(fields_seen)):
        problems.append("outputs: a role field is filled by more than one output")
    listed = {f.path for f in m.files}
    for e in m.models:
        if e.path not in e.files:
            problems.append(f"models: {e.path}: the model file is not in its own files list")
        problems.extend(f"models: {e.path}: {p} has no entry in files" for p in e.files if p not in listed)
    keys = [(e.format, e.precision) for e in m.models]
    if len(keys) != len(set(keys)):
        problems.append("models: two models share a format and precision")
    for f in m.files:
        if f.path.startswith(("/", "\\")) or ".." in f.path.replace("\\", "/").split("/"):
            problems.append(f"files: {f.path}: paths must stay inside the bundle folder")
    if m.role in (Role.CLASSIFIER, Role.SEGMENTER) and not m.classes:
        problems.append(f"classes: a {m.role} bundle must name its classes")
    unknown = sorted(set(m.threat_classes) - set(m.classes))
    if unknown:
        problems.append(f"threat_classes: {', '.join(unknown)} not among classes {list(m.classes)}")
    problems.extend(f"threat_classes: {k}: threshold {v} is outside [0, 1]" for k, v in m.threat_classes.items()
                    if not 0.0 <= v <= 1.0)
    if m.item_detector is not None and "item" not in m.thresholds:
        problems.append("item_detector: names the detector thresholds.item was measured through, but the bundle "
                        "has no thresholds.item")
    if m.parity is not None and not m.parity.passed and not m.forced:
        problems.append("parity: the parity report failed and the bundle is not marked forced")
    if problems:
        raise BundleError("\n".join(f"{source}: {p}" for p in problems))
