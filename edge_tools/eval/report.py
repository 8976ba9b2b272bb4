"""From outcomes and ground truth to the evaluation report: item metrics, ROC, detector COCO metrics, per-kind
recall; and the JSON and Markdown writers.

Where it sits: after the offline runner (``edge_tools.eval.runner``), before the CLI prints and writes. Definitions
(also in ``docs/eval.md``):

* Positive = threat item. An item *alarms* when its verdict is ALARM or UNSCREENED: UNSCREENED is an alarm for
  manual inspection (fail-safe), so it counts as an alarm in every item metric, and is also reported apart.
* Bag scores: AUROC_M uses the highest object anomaly score of the item, AUROC_A the mean (seed 000). An item
  without scored objects has score -inf (never alarms); an UNSCREENED item +inf (always alarms). These top-level
  figures (``auroc_m``, ``at_benign95``, ...) are the ``models.scorer`` slot's, as before issue 32 (the item
  thresholds written from them are in that bundle's units).
* Combined (``combined``, issue 32): the item is judged as the service judges it, ALARM iff some object has a
  reason (a threat class, the classifier or the anomaly scorer at its threshold). Its score for AUROC is the
  highest ratio score/threshold over every signal of every object (``records.signal_ratio``): >= 1 exactly on
  ALARM items, and its 95%-benign threshold t is the factor by which every threshold would be scaled together.
  ``signals`` holds each signal kind alone (alarm iff that kind is among the item's reasons) with its own AUROC.
* "configured" = the decisions the service made (each scorer bundle's own threshold, max rule). "benign95" =
  the lowest item threshold on the bag score (max) that tags at least 95% of benign items benign.
* TP% and FP% (seeds 001–002) are the true- and false-positive rates in percent, i.e. recall and FPR.
* Per threat kind: ``recall`` = items containing the kind that alarmed; ``localised`` = boxed threat objects of
  the kind overlapped at IoU ≥ 0.1 by an anomalous object (or whose concealing host is); ``detected`` = boxed
  threat objects the detector boxed at IoU ≥ 0.5, whatever their score (misses there are the detector's).
* Detector: the decision's objects are the detections (after the bundle's score threshold, NMS and
  ``models.max_objects``), scored by detector score; ground truth = every annotated object the reader keeps.

Must not: run models, or read images.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edge.boxes import box_iou
from edge.records import ReasonKind
from edge_tools.eval.metrics import (
    CocoMetrics,
    ImageBoxes,
    auroc,
    benign_rate_threshold,
    box_recall,
    coco_box_metrics,
    item_counts,
    roc_curve,
)
from edge_tools.eval.records import Dataset, ItemOutcome

BENIGN_RATE = 0.95
LOCALISE_IOU = 0.1
DETECT_IOU = 0.5


@dataclass(frozen=True, slots=True)
class ThresholdMetrics:
    """Item metrics at one operating point; ``threshold`` None = the bundles' own thresholds (the decisions)."""

    threshold: float | None
    tp: int
    fp: int
    tn: int
    fn: int
    recall: float | None
    fpr: float | None
    accuracy: float | None
    precision: float | None
    f1: float | None
    tp_pct: float | None
    fp_pct: float | None
    benign_tagged_benign: float | None


@dataclass(frozen=True, slots=True)
class RocPoints:
    """ROC curve points (alarm iff bag score >= threshold; the first threshold is +inf, written as null)."""

    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]


@dataclass(frozen=True, slots=True)
class KindRecall:
    """How well one threat kind is found (definitions in the module docstring)."""

    kind: str
    items: int
    alarmed: int
    recall: float | None
    objects: int
    localised: int
    localised_rate: float | None
    detected: int
    detected_rate: float | None


@dataclass(frozen=True, slots=True)
class DetectorReport:
    """COCO box metrics of the detections in the decisions, class-agnostic and (if the detector names classes)
    class-aware, and the plain recall at IoU 0.5."""

    images: int
    gt_boxes: int
    detections: int
    recall50: float | None
    agnostic: CocoMetrics
    aware: CocoMetrics | None


@dataclass(frozen=True, slots=True)
class SignalFigures:
    """Item figures of the combined decision (``signal`` "combined") or of one signal kind alone ("known",
    "classifier", "anomaly"). ``at_threshold``: alarm iff the item's reasons include the signal (for "combined":
    the service's verdict); UNSCREENED counts as an alarm. ``auroc_m``/``auroc_a`` rank by the signal's bag score
    (combined and known: score/threshold ratio; classifier and anomaly: the raw score); ``at_benign95`` thresholds
    that bag score (in those units)."""

    signal: str
    items_with_signal: int
    at_threshold: ThresholdMetrics
    auroc_m: float | None
    auroc_a: float | None
    at_benign95: ThresholdMetrics | None


@dataclass(frozen=True, slots=True)
class EvalReport:
    """Everything ``edge eval`` measured for one (detector, scorer) pair on one dataset."""

    dataset: str
    layout: str
    detector: str
    scorer: str | None
    family: str
    items: int
    threat_items: int
    benign_items: int
    unscreened: int
    unscreened_reasons: dict[str, int]
    at_configured: ThresholdMetrics
    at_benign95: ThresholdMetrics | None
    auroc_m: float | None
    auroc_a: float | None
    roc_m: RocPoints | None
    roc_a: RocPoints | None
    detector_metrics: DetectorReport
    per_kind: tuple[KindRecall, ...]
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    workers: int = 1
    latency_ms_p50: float | None = None
    unscreened_example: str | None = None
    """The detail of the first UNSCREENED item (why a scorer that fails everywhere fails)."""
    classifier: str | None = None
    """The ``models.classifier`` bundle (name@version), None without one."""
    threat_classes: dict[str, float] = field(default_factory=dict)
    """The detector's threat classes and thresholds in effect (bundle's merged with ``models.threat_classes``)."""
    combined: SignalFigures | None = None
    """The service's decision: verdicts and the combined score (module docstring); None without any signal."""
    signals: tuple[SignalFigures, ...] = ()
    """Each signal kind present, alone."""
    reason_counts: dict[str, int] = field(default_factory=dict)
    """ALARM items per reason code (an item with two reasons counts under both)."""


FAMILIES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("stfpm", "reverse distillation", "rd4ad", "student"), "Student-Teacher"),
    (("fastflow", "csflow", "cflow", "flow"), "Flow"),
    (("ganomaly", "draem", "dsr", "autoencoder", "reconstruct"), "Reconstruction"),
    (("padim", "patchcore", "dfkde", "dfm", "kde", "gaussian"), "Feature distribution"),
    (("classifier", "supervised"), "Supervised"),
)


def scorer_family(name: str | None, notes: str = "", role: str = "") -> str:
    """The seed-000 method column for a scorer bundle, from its role, then its name, then its notes."""
    if name is None:
        return "Detector only"
    if role == "classifier":
        return "Supervised"
    for text in (name.lower(), notes.lower()):  # the bundle's name first: notes may mention other methods
        for keys, family in FAMILIES:
            if any(k in text for k in keys):
                return family
    return "Other"


def _threshold_metrics(labels: np.ndarray, alarms: np.ndarray, threshold: float | None) -> ThresholdMetrics:
    c = item_counts(labels, alarms)
    benign = c.negatives
    return ThresholdMetrics(threshold, c.tp, c.fp, c.tn, c.fn, c.recall, c.fpr, c.accuracy, c.precision, c.f1,
                            None if c.recall is None else 100.0 * c.recall,
                            None if c.fpr is None else 100.0 * c.fpr,
                            c.tn / benign if benign else None)


def bag_scores(outcomes: Sequence[ItemOutcome], mean: bool = False) -> np.ndarray:
    """Per-item bag score: max (or mean) object score; -inf without scored objects; +inf if UNSCREENED."""
    out = np.empty(len(outcomes), np.float64)
    for i, o in enumerate(outcomes):
        if o.unscreened:
            out[i] = np.inf
            continue
        s = o.score_mean() if mean else o.score_max()
        out[i] = -np.inf if s is None else s
    return out


SIGNAL_KINDS: tuple[tuple[str, ReasonKind], ...] = (("known", ReasonKind.KNOWN),
                                                    ("classifier", ReasonKind.CLASSIFIER),
                                                    ("anomaly", ReasonKind.ANOMALY))


def signal_bag_scores(outcomes: Sequence[ItemOutcome], kind: ReasonKind | None = None,
                      mean: bool = False) -> np.ndarray:
    """Per-item bag score of one signal kind, or (``kind`` None) the combined score (``ItemOutcome.signal_max``);
    -inf without the signal, +inf if UNSCREENED (as ``bag_scores``)."""
    out = np.empty(len(outcomes), np.float64)
    for i, o in enumerate(outcomes):
        if o.unscreened:
            out[i] = np.inf
            continue
        s = o.signal_mean(kind) if mean else o.signal_max(kind)
        out[i] = -np.inf if s is None else s
    return out


def _has_reason(o: ItemOutcome, kind: ReasonKind) -> bool:
    return any(c == kind.value or c.startswith(f"{kind.value}:") for c in o.reason_codes)


def _signal_figures(name: str, labels: np.ndarray, outcomes: Sequence[ItemOutcome], kind: ReasonKind | None,
                    alarms: np.ndarray) -> SignalFigures:
    s_max, s_mean = signal_bag_scores(outcomes, kind), signal_bag_scores(outcomes, kind, mean=True)
    present = np.isfinite(s_max)
    at95 = None
    if present.any() and (~labels).any():
        t = benign_rate_threshold(s_max[~labels], BENIGN_RATE)
        at95 = _threshold_metrics(labels, s_max >= t, t)
    scored = bool(present.any())
    return SignalFigures(name, int(present.sum()), _threshold_metrics(labels, alarms, None),
                         auroc(s_max, labels) if scored else None, auroc(s_mean, labels) if scored else None, at95)


def _combined(labels: np.ndarray, outcomes: Sequence[ItemOutcome]
              ) -> tuple[SignalFigures | None, tuple[SignalFigures, ...]]:
    """The combined decision's figures and each signal kind's alone (only kinds some object carried)."""
    if not any(o.signals for x in outcomes for o in x.objects):
        return None, ()
    verdicts = np.asarray([o.alarmed for o in outcomes], bool)
    combined = _signal_figures("combined", labels, outcomes, None, verdicts)
    alone = []
    for name, kind in SIGNAL_KINDS:
        if not any(s.kind is kind for x in outcomes for o in x.objects for s in o.signals):
            continue
        alarms = np.asarray([o.unscreened or _has_reason(o, kind) for o in outcomes], bool)
        alone.append(_signal_figures(name, labels, outcomes, kind, alarms))
    return combined, tuple(alone)


def _roc(scores: np.ndarray, labels: np.ndarray) -> RocPoints | None:
    if labels.all() or not labels.any():
        return None
    r = roc_curve(scores, labels)
    return RocPoints(r.fpr.tolist(), r.tpr.tolist(), r.thresholds.tolist())


def _per_kind(dataset: Dataset, outcomes: Sequence[ItemOutcome]) -> tuple[KindRecall, ...]:
    items: Counter[str] = Counter()
    alarmed: Counter[str] = Counter()
    objects: Counter[str] = Counter()
    localised: Counter[str] = Counter()
    detected: Counter[str] = Counter()
    for item, outcome in zip(dataset.items, outcomes, strict=True):
        for kind in item.truth.threat_kinds:
            items[kind] += 1
            alarmed[kind] += int(outcome.alarmed)
        det = np.asarray([o.box for o in outcome.objects], np.float64).reshape(-1, 4)
        anomalous = np.asarray([o.box for o in outcome.objects if o.anomalous], np.float64).reshape(-1, 4)
        for obj in item.truth.objects:
            if not obj.threat:
                continue
            objects[obj.kind] += 1
            targets = [obj.box] + ([obj.host_box] if obj.host_box is not None else [])
            if len(anomalous) and (box_iou(targets, anomalous) >= LOCALISE_IOU).any():
                localised[obj.kind] += 1
            if len(det) and (box_iou([obj.box], det) >= DETECT_IOU).any():
                detected[obj.kind] += 1
    kinds = sorted(set(items) | set(objects))
    return tuple(KindRecall(k, items[k], alarmed[k], alarmed[k] / items[k] if items[k] else None,
                            objects[k], localised[k], localised[k] / objects[k] if objects[k] else None,
                            detected[k], detected[k] / objects[k] if objects[k] else None) for k in kinds)


def _detector(dataset: Dataset, outcomes: Sequence[ItemOutcome]) -> DetectorReport:
    images = []
    for item, outcome in zip(dataset.items, outcomes, strict=True):
        objs = item.truth.objects
        images.append(ImageBoxes.of([o.box for o in objs], [o.kind for o in objs],
                                    [o.box for o in outcome.objects], [o.detector_score for o in outcome.objects],
                                    [o.label for o in outcome.objects]))
    hit, total = box_recall(images, DETECT_IOU)
    labelled = any(lab is not None for im in images for lab in im.det_labels)
    return DetectorReport(len(images), total, sum(len(im.det_boxes) for im in images),
                          hit / total if total else None, coco_box_metrics(images, class_aware=False),
                          coco_box_metrics(images, class_aware=True) if labelled else None)


def build_report(dataset: Dataset, outcomes: Sequence[ItemOutcome], *, detector: str, scorer: str | None,
                 family: str, seconds: float = 0.0, workers: int = 1, classifier: str | None = None,
                 threat_classes: dict[str, float] | None = None) -> EvalReport:
    """The report of one run; ``outcomes`` in the order of ``dataset.items``."""
    if len(outcomes) != len(dataset.items):
        raise ValueError(f"{len(outcomes)} outcomes for {len(dataset.items)} items")
    labels = np.asarray([i.truth.threat for i in dataset.items], bool)
    alarms = np.asarray([o.alarmed for o in outcomes], bool)
    s_max, s_mean = bag_scores(outcomes), bag_scores(outcomes, mean=True)
    scored = bool(np.isfinite(s_max).any())
    at95 = None
    if scored and (~labels).any():
        t = benign_rate_threshold(s_max[~labels], BENIGN_RATE)
        at95 = _threshold_metrics(labels, s_max >= t, t)
    reasons = Counter(o.reason for o in outcomes if o.unscreened and o.reason is not None)
    latencies = [o.latency_ms for o in outcomes if not o.unscreened]
    combined, alone = _combined(labels, outcomes)
    by_reason = Counter(code for o in outcomes for code in o.reason_codes)
    return EvalReport(
        dataset=dataset.name, layout=dataset.layout, detector=detector, scorer=scorer, family=family,
        items=len(outcomes), threat_items=int(labels.sum()), benign_items=int((~labels).sum()),
        unscreened=int(sum(o.unscreened for o in outcomes)), unscreened_reasons=dict(sorted(reasons.items())),
        at_configured=_threshold_metrics(labels, alarms, None), at_benign95=at95,
        auroc_m=auroc(s_max, labels) if scored else None, auroc_a=auroc(s_mean, labels) if scored else None,
        roc_m=_roc(s_max, labels) if scored else None, roc_a=_roc(s_mean, labels) if scored else None,
        detector_metrics=_detector(dataset, outcomes), per_kind=_per_kind(dataset, outcomes),
        notes=dataset.notes, seconds=round(seconds, 2), workers=workers,
        latency_ms_p50=float(np.median(latencies)) if latencies else None,
        unscreened_example=next((f"{o.key}: {o.detail}" for o in outcomes if o.unscreened), None),
        classifier=classifier, threat_classes=dict(threat_classes or {}), combined=combined, signals=alone,
        reason_counts=dict(sorted(by_reason.items())),
    )


# ---------------------------------------------------------------------------------------------- writers
def _finite(value: Any) -> Any:
    """JSON has no inf/NaN: write them as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def report_json(reports: Sequence[EvalReport]) -> str:
    """The reports as JSON (``schema`` names the shape; non-finite numbers become null)."""
    return json.dumps({"schema": "xray-edge/eval-1", "reports": [_finite(asdict(r)) for r in reports]}, indent=1)


def item_rows(dataset: Dataset, outcomes: Sequence[ItemOutcome]) -> list[dict[str, Any]]:
    """One JSON-able row per item (``items.jsonl``): truth, verdict, bag scores."""
    rows = []
    for item, o in zip(dataset.items, outcomes, strict=True):
        rows.append(_finite({"key": item.key, "threat": item.truth.threat, "threat_kinds": item.truth.threat_kinds,
                             "verdict": o.verdict, "reason": o.reason, "detail": o.detail,
                             "reasons": list(o.reason_codes), "combined_score": o.signal_max(),
                             "score_max": o.score_max(), "score_mean": o.score_mean(),
                             "classifier_max": o.signal_max(ReasonKind.CLASSIFIER),
                             "objects": len(o.objects), "anomalous": sum(x.anomalous for x in o.objects)}))
    return rows


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100.0 * v:.2f}"


def _num(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _bold_best(cells: list[list[str]], column: int, higher: bool) -> None:
    values = [(float(r[column]), i) for i, r in enumerate(cells) if r[column] not in ("–", "")]
    if len(cells) < 2 or not values:
        return
    best = max(v for v, _ in values) if higher else min(v for v, _ in values)
    for v, i in values:
        if v == best:
            cells[i][column] = f"**{cells[i][column]}**"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def seed_table(reports: Sequence[EvalReport], benign95: bool) -> str:
    """Seed 000's Tables 1–2 shape: Method | Model | Recall | FPR | Accuracy | AUROC_M | AUROC_A (best in bold)."""
    rows = []
    for r in reports:
        m = r.at_benign95 if benign95 else r.at_configured
        rows.append([r.family, r.scorer or "–", _pct(m.recall if m else None), _pct(m.fpr if m else None),
                     _pct(m.accuracy if m else None), _num(r.auroc_m), _num(r.auroc_a)])
    for col, higher in ((2, True), (3, False), (4, True), (5, True), (6, True)):
        _bold_best(rows, col, higher)
    return _table(["Method", "Model", "↑ Recall (%)", "↓ FPR (%)", "↑ Accuracy (%)", "↑ AUROC<sub>M</sub>",
                   "↑ AUROC<sub>A</sub>"], rows)


def combined_table(reports: Sequence[EvalReport]) -> list[str]:
    """Table C: the combined decision and each signal alone, per report (empty when no report has signals)."""
    rows = []
    for r in reports:
        for f in ((r.combined,) if r.combined else ()) + r.signals:
            m, b = f.at_threshold, f.at_benign95
            reasons = (", ".join(f"{k} {v}" for k, v in r.reason_counts.items()) or "–") if f.signal == "combined" \
                else str(sum(v for k, v in r.reason_counts.items() if k.split(":")[0] == f.signal))
            rows.append([r.scorer or "–", f.signal, str(f.items_with_signal), _pct(m.recall), _pct(m.fpr),
                         _num(f.auroc_m), _num(f.auroc_a), _num(b.threshold, 4) if b else "–",
                         _pct(b.recall) if b else "–", _pct(b.fpr) if b else "–", reasons])
    if not rows:
        return []
    return ["**Table C.** The combined decision (ALARM iff any reason, as the service) and each signal alone "
            "(alarm iff it is among the item's reasons). Combined score = the highest score/threshold ratio over "
            "every signal of every object (>= 1 exactly on ALARM; its 95%-benign threshold scales every threshold "
            "together); known: the same ratio over threat classes; classifier, anomaly: the raw score.", "",
            _table(["Scorer", "Signal", "Items with it", "Recall (%)", "FPR (%)", "AUROC<sub>M</sub>",
                    "AUROC<sub>A</sub>", "thr 95% benign", "Recall@95 (%)", "FPR@95 (%)", "ALARM items by reason"],
                   rows), ""]


def markdown_report(reports: Sequence[EvalReport]) -> str:
    """The Markdown tables of ``edge eval`` (one row per scorer for ``--compare``)."""
    if not reports:
        return "no reports\n"
    first = reports[0]
    out = [f"Dataset `{first.dataset}` ({first.layout}): {first.items} items, {first.threat_items} with threats, "
           f"{first.benign_items} benign; detector `{first.detector}`.", ""]
    models = [f"classifier `{r.classifier}`" for r in reports[:1] if r.classifier]
    models += [f"threat classes {', '.join(f'{k} {v:g}' for k, v in sorted(first.threat_classes.items()))}"
               if first.threat_classes else "no detector threat class"]
    out[0] = out[0].rstrip(".") + "; " + "; ".join(models) + "."
    out += ["**Table 1.** Item (bag) level at the bundles' own thresholds (the service's decisions, every signal; "
            "UNSCREENED counts as an alarm). AUROC columns: the `models.scorer` slot's score alone (Table C ranks "
            "by the combined score).", "", seed_table(reports, benign95=False), ""]
    out += combined_table(reports)
    if any(r.at_benign95 is not None for r in reports):
        out += ["**Table 2.** Item level at the threshold that tags 95% of benign items benign (the `models.scorer` "
                "slot's bag score = max object score).", "", seed_table(reports, benign95=True), ""]
    rows = []
    for r in reports:
        m = r.at_configured
        b = r.at_benign95
        rows.append([r.scorer or "–", _pct(m.precision), _pct(m.f1), _pct(m.recall), _pct(m.fpr),
                     _num(b.threshold, 4) if b else "–", _pct(b.precision) if b else "–", _pct(b.f1) if b else "–",
                     f"{r.unscreened}" + (f" ({', '.join(f'{k} {v}' for k, v in r.unscreened_reasons.items())})"
                                          if r.unscreened_reasons else "")])
    out += ["**Table 3.** Precision, F1, TP% and FP% at the bundles' thresholds; the 95%-benign threshold; "
            "UNSCREENED items.", "",
            _table(["Model", "Precision (%)", "F1 (%)", "TP (%)", "FP (%)", "thr 95% benign", "Precision@95 (%)",
                    "F1@95 (%)", "UNSCREENED"], rows), ""]
    # Same detector in every row; take its figures from the run that screened the most items (a scorer that
    # fails makes its items UNSCREENED, and UNSCREENED decisions carry no detections).
    det_report = min(reports, key=lambda r: r.unscreened)
    det = det_report.detector_metrics
    det_rows = [["class-agnostic", _num(det.agnostic.map), _num(det.agnostic.map50), _num(det.agnostic.map75),
                 _num(det.agnostic.ar.get(1)), _num(det.agnostic.ar.get(10)), _num(det.agnostic.ar.get(100)),
                 _pct(det.recall50)]]
    if det.aware is not None:
        det_rows.append(["class-aware", _num(det.aware.map), _num(det.aware.map50), _num(det.aware.map75),
                         _num(det.aware.ar.get(1)), _num(det.aware.ar.get(10)), _num(det.aware.ar.get(100)), "–"])
    out += [f"**Table 4.** Detector `{first.detector}`: COCO box metrics over {det.images} images, {det.gt_boxes} "
            f"ground-truth boxes, {det.detections} detections (run with scorer `{det_report.scorer or '–'}`).", "",
            _table(["", "mAP@[.5:.95]", "mAP50", "mAP75", "AR@1", "AR@10", "AR@100", "Recall@IoU0.5 (%)"],
                   det_rows), ""]
    for r in reports:
        if not r.per_kind:
            continue
        kind_rows = [[k.kind, str(k.items), _pct(k.recall), str(k.objects), _pct(k.localised_rate),
                      _pct(k.detected_rate)] for k in r.per_kind]
        out += [f"**Per threat kind** (scorer `{r.scorer or '–'}`): item recall (alarmed), anomalous object at "
                "IoU ≥ 0.1 (localised), detector box at IoU ≥ 0.5 (detected).", "",
                _table(["Kind", "Items", "Recall (%)", "Objects", "Localised (%)", "Detected (%)"], kind_rows), ""]
    if first.notes:
        out += ["Notes: " + "; ".join(first.notes) + ".", ""]
    return "\n".join(out)

