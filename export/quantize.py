"""INT8 post-training quantisation with NNCF, guarded by a validation metric against FP32.

Calibration items are prepared by :mod:`export.calibration` (the runtime composer). The INT8 model is written
to a temporary name first and only moved into place when the chosen metric on the validation set dropped by at
most ``max_drop`` against the FP32 model; otherwise :class:`~export.errors.QuantizationRefused` says by how much.
Works on OpenVINO IR (``.xml``, for the OpenVINO backend) and ONNX (``.onnx``, QDQ for ONNX Runtime).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.bundles.manifest import Precision
from edge.bundles.outputs import DECISION_THRESHOLD_KEY, Role
from edge.eval.metrics import auroc as metrics_auroc
from export.calibration import InputSet
from export.errors import ExportError, QuantizationRefused
from export.meta import ExportMeta, read_meta, write_onnx_meta
from export.parity import Candidate, agreement, run_candidate

log = logging.getLogger(__name__)


class Metric(StrEnum):
    """``agreement``: decisions equal to FP32's (no labels needed). ``accuracy``/``auroc``: against labels."""

    AGREEMENT = "agreement"
    ACCURACY = "accuracy"
    AUROC = "auroc"


@dataclass(frozen=True, slots=True)
class QuantizeResult:
    """Outcome of an accepted quantisation."""

    path: Path
    metric: Metric
    fp32_value: float
    int8_value: float
    seconds: float

    @property
    def drop(self) -> float:
        return self.fp32_value - self.int8_value


def auroc(scores: npt.NDArray[np.floating], labels: npt.NDArray[np.int64]) -> float:
    """Area under the ROC curve (``edge.eval.metrics.auroc``: rank-sum, ties get average ranks)."""
    value = metrics_auroc(scores, np.asarray(labels) != 0)
    if value is None:
        raise ExportError("auroc needs both positive and negative labels in the validation set")
    return value


def _score_and_prediction(meta: ExportMeta, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    thr = float(meta.thresholds.get(DECISION_THRESHOLD_KEY, 0.5))
    if meta.role is Role.SCORER:
        name = meta.name_of("score")
        assert name is not None
        score = meta.normalisation.apply(outputs[name]).reshape(-1)
        return score, (score >= thr).astype(np.int64)
    if meta.role is Role.CLASSIFIER:
        name = meta.name_of("probs")
        assert name is not None
        probs = np.asarray(outputs[name])
        return 1.0 - probs[:, 0], probs.argmax(axis=1)
    raise ExportError(f"metrics accuracy/auroc are defined for scorers and classifiers, not {meta.role}s; "
                      "use --metric agreement")


def metric_value(metric: Metric, meta: ExportMeta, outputs: dict[str, np.ndarray],
                 labels: npt.NDArray[np.int64] | None) -> float:
    if labels is None:
        raise ExportError(f"--metric {metric} needs labels in the validation data (npz 'label' or labels.json)")
    score, pred = _score_and_prediction(meta, outputs)
    if len(score) != len(labels):
        raise ExportError(f"{len(labels)} labels for {len(score)} validation outputs")
    if metric is Metric.ACCURACY:
        return float(np.mean(pred == labels))
    return auroc(score, labels)


def _nncf_quantize(path: Path, meta: ExportMeta, calib: InputSet, out: Path, subset_size: int) -> None:
    import nncf

    items = [calib.inputs[i:i + 1] for i in range(len(calib.inputs))]
    preset = nncf.QuantizationPreset.PERFORMANCE
    if path.suffix == ".xml":
        import openvino as ov

        from export.onnx_to_openvino import save_ir

        model = ov.Core().read_model(str(path))
        quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=min(subset_size, len(items)),
                                  preset=preset)
        save_ir(quantized, meta.with_precision(Precision.INT8), out, compress_to_fp16=False)
    elif path.suffix == ".onnx":
        import onnx

        name = meta.contract.input_name
        model_proto = onnx.load(str(path))
        q = nncf.quantize(model_proto, nncf.Dataset(items, lambda x: {name: x}),
                          subset_size=min(subset_size, len(items)), preset=preset)
        onnx.save(q, str(out))
        write_onnx_meta(out, meta.with_precision(Precision.INT8))
    else:
        raise ExportError(f"{path}: quantise an OpenVINO .xml or an .onnx file")


def _move_model(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix == ".xml":
        shutil.move(str(src.with_suffix(".bin")), str(dst.with_suffix(".bin")))
    shutil.move(str(src), str(dst))


def quantize(model_path: Path, calibration: InputSet, validation: InputSet, out: Path,
             metric: Metric = Metric.AGREEMENT, max_drop: float = 0.01, subset_size: int = 300,
             threads: int = 2, progress: Callable[[str], None] | None = None) -> QuantizeResult:
    """Quantise ``model_path`` (FP32) to INT8 at ``out`` unless the metric drops by more than ``max_drop``.

    Raises:
        QuantizationRefused: metric dropped too much (nothing is written at ``out``).
        ExportError: bad inputs (wrong model precision, missing labels for the metric, …).
    """
    say = progress or (lambda _msg: None)
    meta = read_meta(model_path)
    if meta.precision is not Precision.FP32:
        raise ExportError(f"{model_path}: is {meta.precision}; quantise the FP32 model")
    if out.suffix != model_path.suffix:
        raise ExportError(f"{out}: must have the same suffix as {model_path.name}")
    if len(validation.inputs) == 0:
        raise ExportError("the validation set is empty")
    backend = "openvino" if model_path.suffix == ".xml" else "onnxruntime"
    t0 = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edge-export-int8-", dir=out.parent) as tmp:
        tmp_out = Path(tmp) / out.name
        say(f"quantising {model_path.name} with NNCF on {min(subset_size, len(calibration.inputs))} "
            f"calibration items from {calibration.source}")
        _nncf_quantize(model_path, meta, calibration, tmp_out, subset_size)
        say(f"validating FP32 and INT8 on {len(validation.inputs)} items ({backend})")
        ref = run_candidate(Candidate(backend, Precision.FP32, model_path), validation.inputs, threads)
        got = run_candidate(Candidate(backend, Precision.INT8, tmp_out), validation.inputs, threads)
        if metric is Metric.AGREEMENT:
            agree = agreement(meta, ref, got)
            if agree is None:
                raise ExportError(f"{meta.role} outputs give no decision to compare; check the output names")
            fp32_value, int8_value = 1.0, agree
        else:
            fp32_value = metric_value(metric, meta, ref, validation.labels)
            int8_value = metric_value(metric, meta, got, validation.labels)
        drop = fp32_value - int8_value
        if drop > max_drop + 1e-9:  # 1 - 0.99 is 0.010000000000000009 in floating point
            raise QuantizationRefused(
                f"INT8 refused: {metric} fell from {fp32_value:.4f} (FP32) to {int8_value:.4f} (INT8) on "
                f"{len(validation.inputs)} validation items, a drop of {drop:.4f} > allowed {max_drop:.4f}. "
                "Try more or more representative calibration data, or keep FP32.")
        _move_model(tmp_out, out)
    seconds = time.monotonic() - t0
    log.info("INT8 accepted: %s %.4f → %.4f", metric, fp32_value, int8_value)
    return QuantizeResult(path=out, metric=metric, fp32_value=fp32_value, int8_value=int8_value, seconds=seconds)
