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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.bundles.manifest import Precision, ScoreNormalisation
from edge.bundles.outputs import DECISION_THRESHOLD_KEY, Role
from edge_tools.eval.metrics import auroc as metrics_auroc
from export.calibration import InputSet
from export.errors import ExportError, QuantizationRefused
from export.meta import ExportMeta, read_meta, write_onnx_meta
from export.parity import Candidate, FlagShift, agreement, flag_shifts, run_candidate

log = logging.getLogger(__name__)


class Metric(StrEnum):
    """``agreement``: decisions equal to FP32's (no labels needed). ``accuracy``/``auroc``: against labels."""

    AGREEMENT = "agreement"
    ACCURACY = "accuracy"
    AUROC = "auroc"


class BiasCorrection(StrEnum):
    """NNCF's bias correction after quantising: ``fast`` (one pass, NNCF's default) or ``full`` (per layer,
    on every calibration item; slower, and on ``classifier-threat`` it turned 98.9% decision agreement into
    99.3% at the object threshold, with no item verdict changed)."""

    FAST = "fast"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class QuantizeResult:
    """Outcome of an accepted quantisation; ``flags``: flagged objects per operating point (scorers and
    classifiers)."""

    path: Path
    metric: Metric
    fp32_value: float
    int8_value: float
    seconds: float
    flags: tuple[FlagShift, ...] = ()

    @property
    def drop(self) -> float:
        return self.fp32_value - self.int8_value


def auroc(scores: npt.NDArray[np.floating], labels: npt.NDArray[np.int64]) -> float:
    """Area under the ROC curve (``edge_tools.eval.metrics.auroc``: rank-sum, ties get average ranks)."""
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


def _nncf_quantize(path: Path, meta: ExportMeta, calib: InputSet, out: Path, subset_size: int,
                   bias_correction: BiasCorrection) -> None:
    import nncf

    items = [calib.inputs[i:i + 1] for i in range(len(calib.inputs))]
    preset = nncf.QuantizationPreset.PERFORMANCE
    fast = bias_correction is BiasCorrection.FAST
    if path.suffix == ".xml":
        import openvino as ov

        from export.onnx_to_openvino import save_ir

        model = ov.Core().read_model(str(path))
        quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=min(subset_size, len(items)),
                                  preset=preset, fast_bias_correction=fast)
        save_ir(quantized, meta.with_precision(Precision.INT8), out, compress_to_fp16=False)
    elif path.suffix == ".onnx":
        import onnx

        name = meta.contract.input_name
        model_proto = onnx.load(str(path))
        q = nncf.quantize(model_proto, nncf.Dataset(items, lambda x: {name: x}),
                          subset_size=min(subset_size, len(items)), preset=preset, fast_bias_correction=fast)
        onnx.save(q, str(out))
        write_onnx_meta(out, meta.with_precision(Precision.INT8))
    else:
        raise ExportError(f"{path}: quantise an OpenVINO .xml or an .onnx file")


def _move_model(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix == ".xml":
        shutil.move(str(src.with_suffix(".bin")), str(dst.with_suffix(".bin")))
    shutil.move(str(src), str(dst))


def check_flags(shifts: list[FlagShift], max_change: float, samples: int) -> None:
    """Refuse an INT8 model that moves an operating point: it flags more or fewer objects than FP32, or other
    ones, by more than ``max_change`` of FP32's flags (see :class:`~export.parity.FlagShift`)."""
    bad = [s for s in shifts if s.change > max_change + 1e-9 or s.lost > max_change + 1e-9]
    if bad:
        raise QuantizationRefused(
            "INT8 refused: it moves the operating point on " f"{samples} validation items ("
            + "; ".join(f"{s.describe()}: count change {s.change:.1%}, FP32 flags lost {s.lost:.1%}" for s in bad)
            + f"; allowed {max_change:.0%}). Decision agreement alone hides this where flags are rare. Try "
            "--bias-correction full, more calibration data, or keep FP32.")


def quantize(model_path: Path, calibration: InputSet, validation: InputSet, out: Path,
             metric: Metric = Metric.AGREEMENT, max_drop: float = 0.01, subset_size: int = 300,
             threads: int = 2, progress: Callable[[str], None] | None = None,
             bias_correction: BiasCorrection = BiasCorrection.FAST, max_flag_change: float = 0.1,
             thresholds: Mapping[str, float] | None = None,
             normalisation: ScoreNormalisation | None = None) -> QuantizeResult:
    """Quantise ``model_path`` (FP32) to INT8 at ``out`` unless the metric drops by more than ``max_drop`` or,
    for scorers and classifiers, the flagged objects at an operating point change by more than
    ``max_flag_change``. ``thresholds`` and ``normalisation`` replace the model file's own (a bundle's: its item
    threshold and a renormalisation are recorded only in bundle.yaml).

    Raises:
        QuantizationRefused: metric dropped or flags moved too much (nothing is written at ``out``).
        ExportError: bad inputs (wrong model precision, missing labels for the metric, …).
    """
    say = progress or (lambda _msg: None)
    file_meta = read_meta(model_path)
    meta = replace(file_meta, thresholds=dict(file_meta.thresholds if thresholds is None else thresholds),
                   normalisation=normalisation or file_meta.normalisation)
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
        _nncf_quantize(model_path, file_meta, calibration, tmp_out, subset_size, bias_correction)
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
        shifts = flag_shifts(meta, ref, got)
        for shift in shifts:
            say(f"flagged objects at {shift.describe()}")
        check_flags(shifts, max_flag_change, len(validation.inputs))
        _move_model(tmp_out, out)
    seconds = time.monotonic() - t0
    log.info("INT8 accepted: %s %.4f → %.4f", metric, fp32_value, int8_value)
    return QuantizeResult(path=out, metric=metric, fp32_value=fp32_value, int8_value=int8_value, seconds=seconds,
                          flags=tuple(shifts))
