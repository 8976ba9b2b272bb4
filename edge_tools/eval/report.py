"""From outcomes and ground truth to the evaluation report: item metrics, ROC, detector COCO metrics, per-kind
recall; and the JSON and Markdown writers.

Where it sits: after the offline runner (``edge_tools.eval.runner``), before the CLI prints and writes. Definitions
(also in ``docs/eval.md``):

* Positive = threat item. An item *alarms* when its verdict is ALARM or UNSCREENED: UNSCREENED is an alarm for
  manual inspection (fail-safe), so it counts as an alarm in every item metric, and is also reported apart.
* Bag scores: AUROC_M uses the highest object anomaly score of the item, AUROC_A the mean (seed 000). An item
  without scored objects has score -inf (never alarms); an UNSCREENED item +inf (always alarms).
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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge.boxes import box_iou
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
                 family: str, seconds: float = 0.0, workers: int = 1) -> EvalReport:
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
                             "score_max": o.score_max(), "score_mean": o.score_mean(),
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


def markdown_report(reports: Sequence[EvalReport]) -> str:
    """The Markdown tables of ``edge eval`` (one row per scorer for ``--compare``)."""
    if not reports:
        return "no reports\n"
    first = reports[0]
    out = [f"Dataset `{first.dataset}` ({first.layout}): {first.items} items, {first.threat_items} with threats, "
           f"{first.benign_items} benign; detector `{first.detector}`.", ""]
    out += ["**Table 1.** Item (bag) level at the bundles' own thresholds (the service's decisions; UNSCREENED "
            "counts as an alarm).", "", seed_table(reports, benign95=False), ""]
    if any(r.at_benign95 is not None for r in reports):
        out += ["**Table 2.** Item level at the threshold that tags 95% of benign items benign (bag score = max "
                "object score).", "", seed_table(reports, benign95=True), ""]
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

