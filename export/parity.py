"""Parity: the same inputs through the reference and every exported model, compared number by number and
decision by decision.

``edge-export verify`` writes the resulting :class:`~edge.bundles.manifest.ParityReport`; ``edge-export bundle``
refuses a failing one unless forced. The reference is PyTorch when the module is available, otherwise the
FP32 model named by the caller (anomalib imports use OpenVINO FP32, as anomalib's own inferencer does).
Runs models through :mod:`edge.backends`, i.e. exactly the code the box runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.backends import SessionOptions, open_model
from edge.bundles.loader import sha256_file
from edge.bundles.manifest import ParityEntry, ParityReport, Precision
from edge.bundles.outputs import DECISION_THRESHOLD_KEY, ITEM_THRESHOLD_KEY, Role
from export.meta import ExportMeta

log = logging.getLogger(__name__)

Outputs = Mapping[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Pass rule per precision: ``max_rel <= rtol`` (None = not checked) and agreement ``>= min_agreement``."""

    rtol: float | None
    min_agreement: float


DEFAULT_TOLERANCES: dict[Precision, Tolerance] = {
    Precision.FP32: Tolerance(rtol=1e-4, min_agreement=0.99),
    Precision.FP16: Tolerance(rtol=1e-2, min_agreement=0.99),
    # INT8 moves every number a little; only decisions are held to account.
    Precision.INT8: Tolerance(rtol=None, min_agreement=0.99),
}


@dataclass(frozen=True, slots=True)
class Candidate:
    """One exported model to check: which backend opens it and at which precision."""

    backend: str
    precision: Precision
    path: Path

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.precision}"


def operating_points(meta: ExportMeta) -> dict[str, float]:
    """The thresholds the runtime may decide objects at, by key (see ``edge.screening.LoadedModel.threshold``):
    ``score`` and, for scorers and classifiers that have one, ``item``. A classifier without thresholds decides
    at anomaly probability 0.5."""
    points = {k: float(v) for k, v in meta.thresholds.items() if k in (DECISION_THRESHOLD_KEY, ITEM_THRESHOLD_KEY)}
    if meta.role is Role.DETECTOR:
        points.pop(ITEM_THRESHOLD_KEY, None)
    if not points:
        points[DECISION_THRESHOLD_KEY] = 0.5
    return points


def object_scores(meta: ExportMeta, outputs: Outputs) -> npt.NDArray[np.float32] | None:
    """What the runtime compares with a threshold, flattened: detector candidate scores, a scorer's normalised
    score, a classifier's anomaly probability (column ``anomaly``, else the last column: the score stage's
    rule). None for segmenters (they decide by argmax) or when the output is missing."""
    role = meta.role
    if meta.layout is not None:  # an imported detector: its candidates' scores, decoded as the runtime does
        from edge.bundles.layouts import LayoutError, decode_outputs

        try:
            return decode_outputs(meta.outputs, meta.layout, outputs, len(meta.classes), meta.contract.height,
                                  meta.contract.width).scores.reshape(-1)
        except LayoutError:
            return None
    name = meta.name_of({Role.DETECTOR: "scores", Role.SCORER: "score", Role.CLASSIFIER: "probs"}.get(role, ""))
    if name is None or name not in outputs:
        return None
    if role is Role.CLASSIFIER:
        probs = np.asarray(outputs[name], dtype=np.float32)
        column = meta.classes.index("anomaly") if "anomaly" in meta.classes else probs.shape[1] - 1
        return probs[:, column].reshape(-1)
    return meta.normalisation.apply(np.asarray(outputs[name], dtype=np.float32)).reshape(-1)


def decisions(meta: ExportMeta, outputs: Outputs, threshold: float | None = None
              ) -> npt.NDArray[np.int64] | None:
    """The role's decisions, flattened: ``score >= threshold`` (default: ``thresholds.score``) where the role
    has an object score; a segmenter's argmax."""
    if meta.role is Role.SEGMENTER:
        name = meta.name_of("masks")
        if name is None or name not in outputs:
            return None
        return np.asarray(outputs[name]).argmax(axis=1).astype(np.int64).reshape(-1)
    scores = object_scores(meta, outputs)
    if scores is None:
        return None
    thr = operating_points(meta)[DECISION_THRESHOLD_KEY] if threshold is None else threshold
    return (scores >= thr).astype(np.int64)


def agreement(meta: ExportMeta, ref: Outputs, got: Outputs) -> float | None:
    """Fraction of equal decisions between two output sets of the same inputs; with several operating points
    (a scorer's object and item thresholds) the lowest of them, since the service may decide at either."""
    values = []
    for threshold in operating_points(meta).values():
        a, b = decisions(meta, ref, threshold), decisions(meta, got, threshold)
        if a is None or b is None or a.size == 0:
            return None
        if a.size != b.size:
            # Already-suppressed detectors (torchvision, some end-to-end exports) return as many boxes as they
            # keep, which may differ between runtimes: then only the counts kept at the threshold compare.
            na, nb = int(a.sum()), int(b.sum())
            values.append(1.0 - abs(na - nb) / max(na, nb, 1))
            continue
        values.append(float(np.mean(a == b)))
    return min(values)


@dataclass(frozen=True, slots=True)
class FlagShift:
    """How many objects the reference and the candidate flag at one operating point.

    Decision agreement is blind where flags are rare: at a scorer's item threshold ~1% of objects are flagged,
    so a model that doubles the alarms still agrees on 99% of decisions. ``change`` is the relative change of
    the flagged count (against at least ``MIN_FLAGS`` flags, so a handful of flags does not decide alone).
    """

    point: str
    threshold: float
    objects: int
    reference: int
    candidate: int
    both: int

    MIN_FLAGS = 20

    @property
    def change(self) -> float:
        return abs(self.candidate - self.reference) / max(self.reference, self.MIN_FLAGS)

    @property
    def lost(self) -> float:
        """Share of the reference's flags the candidate drops."""
        return (self.reference - self.both) / max(self.reference, self.MIN_FLAGS)

    def describe(self) -> str:
        return (f"{self.point} {self.threshold:.4g}: FP32 flags {self.reference}, INT8 {self.candidate}, both "
                f"{self.both} of {self.objects}")


def flag_shifts(meta: ExportMeta, ref: Outputs, got: Outputs) -> list[FlagShift]:
    """Flag counts at every operating point of a scorer or benign/anomaly classifier (empty for other roles:
    a detector's candidates pass NMS before anything alarms, so its detection metrics judge it)."""
    if meta.role not in (Role.SCORER, Role.CLASSIFIER):
        return []
    a_scores, b_scores = object_scores(meta, ref), object_scores(meta, got)
    if a_scores is None or b_scores is None:
        return []
    shifts = []
    for point, threshold in operating_points(meta).items():
        a, b = a_scores >= threshold, b_scores >= threshold
        shifts.append(FlagShift(point, threshold, int(a.size), int(a.sum()), int(b.sum()), int((a & b).sum())))
    return shifts


def errors(ref: Outputs, got: Outputs) -> tuple[float, float]:
    """(max abs error, max abs error / largest reference magnitude) over every floating-point output."""
    max_abs, max_rel = 0.0, 0.0
    for name, r in ref.items():
        r = np.asarray(r)
        if not np.issubdtype(r.dtype, np.floating):
            continue
        g = np.asarray(got[name], dtype=np.float64)
        if g.shape != r.shape:
            return float("inf"), float("inf")
        # NaN and inf where the other side differs are an infinite error: a NaN difference would otherwise vanish
        # from the maximum (max(0.0, nan) is 0.0) and a model that returns NaN would pass.
        odd = ~(np.isfinite(g) & np.isfinite(r))
        if np.any(odd & ~((np.isnan(g) & np.isnan(r)) | (g == r))):
            return float("inf"), float("inf")
        g, r = g[~odd], r[~odd]
        diff = float(np.max(np.abs(g - r))) if r.size else 0.0
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / max(scale, 1e-12))
    return max_abs, max_rel


def run_batched(fn: Callable[[npt.NDArray[np.float32]], Outputs], inputs: npt.NDArray[np.float32],
                batch: int = 16) -> dict[str, np.ndarray]:
    """Run ``fn`` over ``inputs`` in chunks and concatenate outputs along the batch axis."""
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(inputs), batch):
        for name, value in fn(inputs[i:i + batch]).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {k: np.concatenate(v, axis=0) for k, v in parts.items()}


def fixed_batch(path: Path) -> int | None:
    """The batch size a model file's input is fixed to, or None when its batch axis is dynamic.

    This toolchain exports a dynamic batch axis; other exporters often fix it at 1 (Ultralytics' default, most
    mmdeploy static configs), and such a model refuses a batch of 16 (``edge-export import-detector``)."""
    if path.suffix == ".onnx":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        init = {i.name for i in graph.initializer}
        first = next((i for i in graph.input if i.name not in init), None)
        dims = [] if first is None else list(first.type.tensor_type.shape.dim)
        return int(dims[0].dim_value) if dims and dims[0].HasField("dim_value") else None
    if path.suffix == ".xml":
        import openvino as ov

        shape = ov.Core().read_model(str(path)).inputs[0].get_partial_shape()
        return int(shape[0].get_length()) if shape.rank.is_static and shape[0].is_static else None
    return None


def run_candidate(candidate: Candidate, inputs: npt.NDArray[np.float32], threads: int = 2) -> dict[str, np.ndarray]:
    session = open_model(candidate.path, candidate.backend, SessionOptions(threads=threads))
    try:
        return run_batched(session.run, inputs, batch=fixed_batch(candidate.path) or 16)
    finally:
        session.close()


def compare(meta: ExportMeta, ref: Outputs, got: Outputs, candidate: Candidate,
            tolerances: Mapping[Precision, Tolerance] = DEFAULT_TOLERANCES) -> ParityEntry:
    """One report line; ``passed`` applies the tolerance of the candidate's precision."""
    missing = set(ref) - set(got)
    tol = tolerances[candidate.precision]
    if missing:
        log.error("%s lacks outputs %s", candidate.label, sorted(missing))
        return ParityEntry(backend=candidate.backend, precision=candidate.precision, max_abs=float("inf"),
                           max_rel=float("inf"), decision_agreement=0.0, rtol=tol.rtol,
                           min_agreement=tol.min_agreement, passed=False, sha256=sha256_file(candidate.path))
    max_abs, max_rel = errors(ref, got)
    agree = agreement(meta, ref, got)
    passed = (tol.rtol is None or max_rel <= tol.rtol) and (agree is None or agree >= tol.min_agreement)
    if tol.rtol is None and agree is None:
        passed = False  # nothing was checked: do not call that a pass
    return ParityEntry(backend=candidate.backend, precision=candidate.precision, max_abs=max_abs,
                       max_rel=max_rel, decision_agreement=agree, rtol=tol.rtol,
                       min_agreement=tol.min_agreement, passed=passed, sha256=sha256_file(candidate.path))


def verify(meta: ExportMeta, inputs: npt.NDArray[np.float32], reference: Outputs, reference_name: str,
           candidates: Sequence[Candidate], tolerances: Mapping[Precision, Tolerance] = DEFAULT_TOLERANCES,
           threads: int = 2, progress: Callable[[str], None] | None = None) -> ParityReport:
    """Run every candidate on ``inputs`` and compare with ``reference`` (outputs of the same inputs)."""
    entries = []
    for cand in candidates:
        if progress is not None:
            progress(f"running {cand.label} on {len(inputs)} inputs ({cand.path.name})")
        got = run_candidate(cand, inputs, threads)
        entries.append(compare(meta, reference, got, cand, tolerances))
    return ParityReport(passed=bool(entries) and all(e.passed for e in entries), reference=reference_name,
                        samples=len(inputs), entries=tuple(entries))


def format_report(report: ParityReport) -> str:
    """A fixed-width table for people."""
    lines = [f"reference: {report.reference}   samples: {report.samples}",
             f"{'backend/precision':<22}{'max_abs':>12}{'max_rel':>12}{'agreement':>11}  result"]
    for e in report.entries:
        agree = "-" if e.decision_agreement is None else f"{e.decision_agreement:.4f}"
        lines.append(f"{e.backend + '/' + e.precision:<22}{e.max_abs:>12.3g}{e.max_rel:>12.3g}{agree:>11}  "
                     f"{'pass' if e.passed else 'FAIL'}")
    lines.append("PARITY PASSED" if report.passed else "PARITY FAILED")
    return "\n".join(lines)
