"""Export metadata carried inside every model file the toolchain writes (ONNX metadata_props, OpenVINO rt_info).

Role, input contract, output names, thresholds, normalisation, classes and precision are stated once, at
``edge-export onnx``, and travel with the file through ``openvino``, ``quantize``, ``verify`` and ``bundle``,
so no later step can be told a different contract by mistake. Serialised with :mod:`edge.bundles.manifest`'s
functions so that the bundle manifest and this metadata cannot disagree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge.bundles.manifest import (
    DetectorLayout,
    NormalisationKind,
    OutputSpec,
    Precision,
    ScoreNormalisation,
    contract_from_dict,
    contract_to_dict,
    layout_from_dict,
    layout_to_dict,
)
from edge.bundles.outputs import Role, optional_fields, required_fields
from edge.contracts import InputContract
from export.errors import ExportError

META_KEY = "xray_edge.meta"
RT_INFO_PATH = ["xray_edge", "meta"]


@dataclass(frozen=True, slots=True)
class ExportMeta:
    """What a model file is: the parts of the bundle manifest that belong to the model itself."""

    role: Role
    contract: InputContract
    outputs: tuple[OutputSpec, ...]
    precision: Precision = Precision.FP32
    thresholds: Mapping[str, float] = field(default_factory=dict)
    normalisation: ScoreNormalisation = field(default_factory=ScoreNormalisation)
    classes: tuple[str, ...] = ()
    layout: DetectorLayout | None = None
    """An imported detector's output layout (``edge-export import-detector``); None for native outputs."""

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def name_of(self, role_field: str) -> str | None:
        """Graph output name for a role field."""
        return next((o.name for o in self.outputs if o.field == role_field), None)

    def with_precision(self, precision: Precision) -> ExportMeta:
        return replace(self, precision=precision)

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "role": str(self.role),
            "input": contract_to_dict(self.contract),
            "outputs": [{"name": o.name, "field": o.field, "shape": list(o.shape), "dtype": o.dtype}
                        for o in self.outputs],
            "precision": str(self.precision),
            "thresholds": dict(self.thresholds),
            "normalisation": {"kind": str(self.normalisation.kind), "low": self.normalisation.low,
                              "high": self.normalisation.high, "centre": self.normalisation.centre},
            "classes": list(self.classes),
        }
        if self.layout is not None:
            data["layout"] = layout_to_dict(self.layout)
        return json.dumps(data, sort_keys=True)

    @staticmethod
    def from_json(text: str, source: str) -> ExportMeta:
        try:
            data = json.loads(text)
            norm = data["normalisation"]
            return ExportMeta(
                role=Role(data["role"]),
                contract=contract_from_dict(data["input"]),
                outputs=tuple(OutputSpec(name=o["name"], field=o["field"], shape=tuple(o["shape"]),
                                         dtype=o["dtype"]) for o in data["outputs"]),
                precision=Precision(data["precision"]),
                thresholds={k: float(v) for k, v in data["thresholds"].items()},
                normalisation=ScoreNormalisation(kind=NormalisationKind(norm["kind"]), low=float(norm["low"]),
                                                 high=float(norm["high"]), centre=float(norm["centre"])),
                classes=tuple(data["classes"]),
                layout=None if data.get("layout") is None else layout_from_dict(data["layout"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ExportError(f"{source}: xray-edge metadata is unreadable ({exc}); re-export the model") from exc


def default_outputs(role: Role, names: Mapping[str, str] | None = None,
                    with_optional: tuple[str, ...] = ()) -> tuple[OutputSpec, ...]:
    """Output specs for a role, graph names = field names unless ``names`` maps a field to another name."""
    names = names or {}
    unknown = set(with_optional) - set(optional_fields(role))
    if unknown:
        raise ExportError(f"{role} models have no optional outputs {sorted(unknown)}; "
                          f"optional: {list(optional_fields(role))}")
    wanted = (*required_fields(role), *with_optional)
    return tuple(OutputSpec(name=names.get(f, f), field=f, shape=(), dtype="float32") for f in wanted)


def write_onnx_meta(path: Path, meta: ExportMeta) -> None:
    """Store ``meta`` in the ONNX file's metadata_props (rewrites the file; keeps external data in place)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    props[META_KEY] = meta.to_json()
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))


def read_meta(path: Path) -> ExportMeta:
    """Metadata from an ``.onnx`` or OpenVINO ``.xml`` written by this toolchain."""
    if not path.is_file():
        raise ExportError(f"{path}: no such model file")
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
        if META_KEY not in props:
            raise ExportError(f"{path}: has no xray-edge metadata; export it with `edge-export onnx` "
                              "(or use `edge-export import-anomalib` for anomalib exports)")
        return ExportMeta.from_json(props[META_KEY], str(path))
    if path.suffix == ".xml":
        import openvino as ov

        model = ov.Core().read_model(str(path))
        if not model.has_rt_info(RT_INFO_PATH):
            raise ExportError(f"{path}: has no xray-edge metadata; convert it with `edge-export openvino`")
        return ExportMeta.from_json(str(model.get_rt_info(RT_INFO_PATH).astype(str)), str(path))
    raise ExportError(f"{path}: expected an .onnx or OpenVINO .xml file")
