"""Trained module → parity-verified bundle (ONNX FP32, OpenVINO FP32, OpenVINO INT8) with the export toolchain.

Where it sits: the last step of every recipe. It calls the same functions as ``edge-export onnx``,
``openvino``, ``quantize``, ``verify`` and ``bundle`` (their Python API), with calibration and parity inputs
composed exactly as the runtime composes them. Must not: bundle a model whose parity failed (no forcing here).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from torch import nn

from edge.bundles.loader import Bundle
from edge.bundles.manifest import Precision, ScoreNormalisation
from edge.bundles.outputs import Role
from edge.contracts import InputContract
from export.bundle import bundle_models_from_files, make_bundle
from export.calibration import InputSet
from export.meta import ExportMeta, default_outputs
from export.onnx_to_openvino import convert_to_openvino
from export.parity import DEFAULT_TOLERANCES, Candidate, Tolerance, run_batched, verify
from export.quantize import Metric, quantize
from export.torch_to_onnx import export_onnx, run_torch


def pack(model: nn.Module, role: Role, contract: InputContract, thresholds: Mapping[str, float],
         normalisation: ScoreNormalisation, calibration: NDArray[np.float32], validation: NDArray[np.float32],
         out: Path, name: str, version: str, training_data: str, notes: str, classes: tuple[str, ...] = (),
         progress: Callable[[str], None] = print, int8: bool = True, fp32_rtol: float = 1e-4,
         int8_max_drop: float = 0.01, optional_outputs: tuple[str, ...] = (),
         threat_classes: Mapping[str, float] | None = None) -> Bundle:
    """Export, convert, quantise (refused → FP32 only; skipped unless ``int8``), verify and bundle ``model``.

    ``fp32_rtol`` is the FP32 parity tolerance and ``1 - int8_max_drop`` the INT8 decision-agreement floor (both
    recorded per entry in the bundle's parity report). ``optional_outputs`` names the role's optional outputs
    the model also returns, in forward order after the required ones (e.g. a class-aware detector's ``labels``).
    """
    meta = ExportMeta(role=role, contract=contract, outputs=default_outputs(role, with_optional=optional_outputs),
                      thresholds=dict(thresholds),
                      normalisation=normalisation, classes=classes)
    model.eval()
    with tempfile.TemporaryDirectory(prefix="xray-pack-") as tmp:
        t = Path(tmp)
        onnx_path, xml, xml8 = t / f"{name}.onnx", t / f"{name}_fp32.xml", t / f"{name}_int8.xml"
        progress(f"{name}: exporting ONNX")
        meta = export_onnx(model, meta, onnx_path)
        progress(f"{name}: converting to OpenVINO FP32")
        convert_to_openvino(onnx_path, xml, Precision.FP32)
        files = [onnx_path, xml]
        onnx8 = t / f"{name}_int8.onnx"
        # OpenVINO INT8 first, ONNX Runtime QDQ as fallback
        for src, dst in ((xml, xml8), (onnx_path, onnx8)) if int8 else ():
            progress(f"{name}: quantising {src.name} to INT8 ({len(calibration)} calibration inputs)")
            try:
                res = quantize(src, InputSet(calibration, None, "sim"), InputSet(validation, None, "sim val"), dst,
                               Metric.AGREEMENT, int8_max_drop, min(300, len(calibration)), 2, progress)
            except Exception as exc:  # an INT8 refusal leaves the FP32 bundle usable
                progress(f"{name}: INT8 from {src.name} not included: {str(exc)[:300]}")
                continue
            progress(f"{name}: INT8 agreement {res.int8_value:.4f}")
            files.append(dst)
            break
        progress(f"{name}: verifying parity on {len(validation)} inputs")
        reference = run_batched(lambda b: run_torch(model, b, meta.output_names), validation)
        candidates = [Candidate("onnxruntime" if p.suffix == ".onnx" else "openvino",
                                Precision.INT8 if p in (xml8, onnx8) else Precision.FP32, p) for p in files]
        tolerances = {**DEFAULT_TOLERANCES, Precision.FP32: Tolerance(fp32_rtol, 0.99),
                      Precision.INT8: Tolerance(None, 1.0 - int8_max_drop)}
        report = verify(meta, validation, reference, f"pytorch ({type(model).__name__})", candidates, tolerances)
        base, models = bundle_models_from_files(files)
        return make_bundle(out, name, version, base, models, report, training_data=training_data, notes=notes,
                           overwrite=True, threat_classes=threat_classes)
