"""ONNX → OpenVINO IR at FP32 or FP16, carrying the export metadata into the IR's rt_info.

``openvino.save_model`` compresses weights to FP16 by default; this module always passes
``compress_to_fp16`` explicitly so that an "FP32" IR really holds FP32 weights (parity 1e-7 instead of 7e-5).
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.bundles.manifest import Precision
from export.errors import ExportError
from export.meta import RT_INFO_PATH, ExportMeta, read_meta

log = logging.getLogger(__name__)


def save_ir(model: object, meta: ExportMeta, out: Path, compress_to_fp16: bool) -> None:
    """Write ``model`` (an ``openvino.Model``) with ``meta`` in its rt_info."""
    import openvino as ov

    assert isinstance(model, ov.Model)
    model.set_rt_info(meta.to_json(), RT_INFO_PATH)
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out), compress_to_fp16=compress_to_fp16)


def convert_to_openvino(onnx_path: Path, out: Path, precision: Precision = Precision.FP32) -> ExportMeta:
    """Convert and save; returns the IR's metadata. INT8 is made by ``edge-export quantize``, not here."""
    import openvino as ov

    if precision is Precision.INT8:
        raise ExportError("INT8 IRs come from `edge-export quantize` (calibrated), not from conversion")
    if out.suffix != ".xml":
        raise ExportError(f"{out}: the OpenVINO IR file name must end in .xml")
    meta = read_meta(onnx_path).with_precision(precision)
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:
        raise ExportError(f"{onnx_path}: OpenVINO cannot convert it: {exc}") from exc
    save_ir(model, meta, out, compress_to_fp16=precision is Precision.FP16)
    log.info("wrote %s (%s)", out, precision)
    return meta
