"""``models:`` section: which bundles screen items and on which backend."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edge.config.base import EdgeBaseConfig


class ModelsConfig(EdgeBaseConfig):
    """Bundles and inference backend. Thresholds and normalisation live in the bundles, not here."""

    detector: Path = Field(description="detector bundle directory (contains bundle.yaml)")
    scorer: Path | None = Field(None, description="anomaly scorer or classifier bundle directory")
    backend: Literal["openvino", "onnxruntime"] = Field("openvino", description="inference runtime")
    precision: Literal["fp32", "int8"] = Field("fp32", description="which model file of the bundle to run")
    threads: int = Field(1, ge=1, le=256, description="inference threads per call (OpenVINO compiles one stream of "
                         "this many threads per decide.worker); the decide.workers items in flight already use one "
                         "core each, so keep workers x threads <= cores")
    device: Literal["CPU", "GPU", "NPU"] = Field("CPU", description="OpenVINO device; falls back to CPU")
    cache_dir: Path | None = Field(None, description="compiled-model cache directory; absent = no cache")
    operating_point: Literal["item", "object"] = Field(
        "item", description="which scorer threshold decides: 'item' (the bundle's thresholds.item, 95% of benign "
        "items clear; falls back to 'object' when the bundle has none) or 'object' (thresholds.score, 95% of benign "
        "objects clear, so an item of many objects alarms far more often)")
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
