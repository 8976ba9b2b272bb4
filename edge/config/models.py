"""``models:`` section: which bundles screen items, on which backend and precision, and which signals alarm.

Three slots, one decision (issue 32): ``detector`` (its threat classes alarm on their own), ``classifier``
(supervised benign/threat, for the threat kinds it was trained on) and ``scorer`` (benign-only anomaly scorer,
for the kinds nobody labelled). Each slot is a bundle path, or a mapping ``{bundle, precision, backend}`` when
that model must run otherwise than ``models.precision`` / ``models.backend`` (the defaults), e.g. an INT8
detector beside an FP32 scorer. A file written before the mapping form and the ``classifier`` slot existed reads
as it did: a path per slot, a benign/anomaly classifier in ``models.scorer``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from edge.config.base import EdgeBaseConfig

Backend = Literal["openvino", "onnxruntime"]
PrecisionName = Literal["fp32", "int8"]


class ModelEntry(EdgeBaseConfig):
    """One model slot: the bundle, and its own precision and backend when they differ from the section's."""

    bundle: Path = Field(description="bundle directory (contains bundle.yaml)")
    precision: PrecisionName | None = Field(None, description="which model file of this bundle to run; absent = "
                                                              "models.precision")
    backend: Backend | None = Field(None, description="inference runtime of this model; absent = models.backend")


class CropModelEntry(ModelEntry):
    """A classifier or scorer slot: a model entry that may also set the threshold of this combination."""

    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="classifier/scorer only: the score at which an object alarms, for this "
        "combination of models (`edge fit operating-point` measures it on benign items so that the combined item "
        "false-alarm rate meets its target); absent = the bundle's own (models.operating_point)")


def _entry(value: Any) -> Any:
    """A bare path is the short form of ``{bundle: path}`` (every config written before the mapping form)."""
    if isinstance(value, str | Path):
        return {"bundle": value}
    return value


class ModelsConfig(EdgeBaseConfig):
    """Bundles and inference backend. Thresholds and normalisation live in the bundles, not here (except the
    detector's threat-class thresholds, which a site may override)."""

    detector: ModelEntry = Field(description="detector bundle directory, or {bundle, precision, backend}")
    classifier: CropModelEntry | None = Field(
        None, description="supervised benign/threat classifier bundle (alarm reason 'classifier'), or {bundle, "
        "precision, backend}; absent = none")
    scorer: CropModelEntry | None = Field(
        None, description="benign-only anomaly scorer bundle (alarm reason 'anomaly'), or {bundle, precision, "
        "backend}; absent = none. A classifier bundle here (configs before issue 32) still works and alarms with "
        "reason 'classifier'")
    threat_classes: dict[str, float | None] = Field(
        default_factory=dict, description="detector classes that alarm on their own, {class: detector score "
        "threshold in [0, 1]}, merged over the detector bundle's threat_classes; null removes a class of the "
        "bundle's. A class must be one of the detector bundle's classes")
    backend: Backend = Field("openvino", description="inference runtime (default of every model)")
    precision: PrecisionName = Field("fp32", description="which model file of each bundle to run (default of "
                                                         "every model)")
    threads: int = Field(1, ge=1, le=256, description="inference threads per call (OpenVINO compiles one stream of "
                         "this many threads per decide.worker); the decide.workers items in flight already use one "
                         "core each, so keep workers x threads <= cores")
    device: Literal["CPU", "GPU", "NPU"] = Field("CPU", description="OpenVINO device; falls back to CPU")
    cache_dir: Path | None = Field(None, description="compiled-model cache directory; absent = no cache")
    operating_point: Literal["item", "object"] = Field(
        "item", description="which classifier/scorer threshold decides: 'item' (the bundle's thresholds.item, set "
        "so that benign items clear at the target rate; falls back to 'object' when the bundle has none) or "
        "'object' (thresholds.score, 95% of benign objects clear, so an item of many objects alarms far more "
        "often)")
    max_objects: int = Field(32, ge=1, le=1000, description="most objects scored per item")
    trusted_keys: tuple[Path, ...] = Field(
        (), description="public-key files (Ed25519, PEM or the raw 32 bytes in base64) whose signatures "
        "(bundle.sig, `edge-export sign`) this box accepts; a bundle signed by any other key is refused")
    allow_unsigned: bool = Field(
        False, description="run bundles without a valid signature by a trusted key (no signature, unknown key, bad "
        "signature, changed after signing); the service then reports degraded 'bundles unsigned'. For the "
        "bench only: nothing proves who made such a bundle")
    require_tested_runtime: bool = Field(
        False, description="refuse to run a bundle on an OpenVINO / ONNX Runtime release outside the range its "
        "parity was proven on (bundle.yaml toolchain; the other backend is tried, as on a load failure); false: run "
        "it and report degraded")

    @field_validator("detector", "classifier", "scorer", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return _entry(value)

    @field_validator("threat_classes")
    @classmethod
    def _thresholds_in_range(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        bad = {k: v for k, v in value.items() if v is not None and not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"thresholds {bad} are outside [0, 1]; expected a detector score in [0, 1] (or null to "
                             "remove the class)")
        return value

    def precision_of(self, entry: ModelEntry) -> PrecisionName:
        """The precision ``entry`` runs at: its own, else the section's."""
        return entry.precision or self.precision

    def backend_of(self, entry: ModelEntry) -> Backend:
        """The backend ``entry`` runs on: its own, else the section's."""
        return entry.backend or self.backend
