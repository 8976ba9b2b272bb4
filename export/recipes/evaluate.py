"""Figures for ``docs/models.md``: detector AR/mAP (the one COCO evaluator, ``edge_tools.eval.metrics``), real-image
recall, seed-000 scorer tables.

Where it sits: after training, before packing. Detector outputs are post-processed exactly as the runtime's
detect stage does (score threshold, class-agnostic NMS from ``edge.stages.detect``, top-k). Real images from
``../shared/realdata/xray`` are used for evaluation only: GDXray grey and SIXray pseudo-colour enter through
``edge.condition.degraded``. Must not: train on real images, or be imported by the runtime.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.boxes import box_iou
from edge.condition.composer import compose, geometry
from edge.condition.degraded import from_grey, from_pseudo_colour
from edge.condition.image import ConditionedImage
from edge.contracts import InputContract
from edge.stages.detect import suppress, vote
from edge_tools.eval.metrics import ImageBoxes, coco_curves
from edge_tools.eval.metrics import auroc as metrics_auroc

F32 = NDArray[np.float32]
DetectFn = Callable[[F32], tuple[F32, F32]]
"""(N, C, H, W) inputs → boxes (N, K, 4), scores (N, K) in input pixels."""


def postprocess(boxes: F32, scores: F32, threshold: float, iou: float, top: int,
                vote_iou: float = 0.0) -> tuple[F32, F32]:
    """One image's candidates → kept boxes and scores (runtime detect-stage rules, box voting when
    ``vote_iou`` > 0)."""
    keep = scores >= threshold
    b, s = boxes[keep].astype(np.float32), scores[keep].astype(np.float32)
    k = suppress(b, s, None, iou, top)
    return (vote(b, s, None, k, vote_iou) if vote_iou > 0 else b[k]), s[k]


def recall_at(gts: Sequence[NDArray[np.floating]], dets: Sequence[NDArray[np.floating]], iou: float = 0.5) -> float:
    """Fraction of ground-truth boxes covered by some detection at IoU ≥ ``iou``."""
    hit = total = 0
    for g, d in zip(gts, dets, strict=True):
        total += len(g)
        if len(g) and len(d):
            hit += int((box_iou(g, d).max(axis=1) >= iou).sum())
    return hit / max(total, 1)


def _images(gts: Sequence[NDArray[np.floating]], gt_labels: Sequence[NDArray[np.int64]],
            dets: Sequence[tuple[F32, F32, NDArray[np.int64]]], classes: Sequence[str],
            subset: Sequence[NDArray[np.bool_]] | None) -> list[ImageBoxes]:
    """The recipes' arrays as the COCO evaluator's images: labels by class name, ground truth outside ``subset``
    ignored."""
    return [ImageBoxes.of(g, [classes[int(c)] for c in gl], db, ds, [classes[int(c)] for c in dl],
                          None if subset is None else ~np.asarray(subset[i], bool))
            for i, (g, gl, (db, ds, dl)) in enumerate(zip(gts, gt_labels, dets, strict=True))]


def coco_metrics(gts: Sequence[NDArray[np.floating]], dets: Sequence[tuple[F32, F32]],
                 subset: Sequence[NDArray[np.bool_]] | None = None) -> dict[str, float]:
    """Class-agnostic COCO metrics (``edge_tools.eval.metrics``, pycocotools' rules, 100 detections per image):
    mAP@[.5:.95], mAP50, mAP75, AR@100 (recall averaged over IoU 0.5:0.95) and its IoU-0.5 term alone
    (``recall50@100``).

    ``subset`` restricts the ground truth to some objects (e.g. those that overlap no other): the others are
    *ignored* as in :func:`coco_class_metrics`, so AR is the share of the subset's objects found and AP still
    charges unmatched detections. ``objects`` = objects counted.
    """
    objects = float(sum(int(np.sum(k)) for k in subset) if subset is not None else sum(len(g) for g in gts))
    curves = coco_curves(_images(gts, [np.zeros(len(g), np.int64) for g in gts],
                                 [(b, s, np.zeros(len(s), np.int64)) for b, s in dets], ("object",), subset),
                         class_aware=False).get("object")
    if curves is None or not any(len(s) for _, s in dets):
        return {"mAP": 0.0, "mAP50": 0.0, "mAP75": 0.0, "AR100": 0.0, "recall50@100": 0.0, "objects": objects}
    prec, rec = curves[100].precision, curves[100].recall  # (IoU thresholds .5:.05:.95, recall points), (IoU)
    return {"mAP": float(prec.mean()), "mAP50": float(prec[0].mean()), "mAP75": float(prec[5].mean()),
            "AR100": float(rec.mean()), "recall50@100": float(rec[0]), "objects": objects}


OVERLAP_BANDS = {"under 0.1": (0.0, 0.1), "0.1-0.5": (0.1, 0.5), "0.5 up": (0.5, np.inf)}
"""Ground-truth objects by their largest box IoU with another object of the same item, ``lo <= IoU < hi``: about
alone (in a parcel almost every box touches another), overlapped, heavily overlapped (the class-aware detector's
heavy-overlap subset, seed 004's problem)."""


def max_overlap(boxes: NDArray[np.floating]) -> NDArray[np.float64]:
    """Per box of one item: its largest IoU with another box of the same item (0 for a box alone)."""
    if not len(boxes):
        return np.zeros(0)
    m = box_iou(np.asarray(boxes, np.float64), np.asarray(boxes, np.float64))
    np.fill_diagonal(m, 0.0)
    return np.asarray(m.max(axis=1), np.float64)


def overlap_band(boxes: NDArray[np.floating], band: str) -> NDArray[np.bool_]:
    """Which of one item's boxes fall in ``band`` of :data:`OVERLAP_BANDS`."""
    lo, hi = OVERLAP_BANDS[band]
    worst = max_overlap(boxes)
    return np.asarray((worst >= lo) & (worst < hi))


def postprocess_labelled(boxes: F32, scores: F32, labels: NDArray[np.int64], threshold: float, iou: float,
                         top: int, vote_iou: float = 0.0) -> tuple[F32, F32, NDArray[np.int64]]:
    """One image's labelled candidates → kept boxes, scores, labels (runtime rules with per-class NMS, box voting
    within each class when ``vote_iou`` > 0)."""
    keep = scores >= threshold
    b, s, lab = boxes[keep].astype(np.float32), scores[keep].astype(np.float32), labels[keep].astype(np.int64)
    k = suppress(b, s, lab, iou, top)
    return (vote(b, s, lab, k, vote_iou) if vote_iou > 0 else b[k]), s[k], lab[k]


def coco_class_metrics(gts: Sequence[NDArray[np.floating]], gt_labels: Sequence[NDArray[np.int64]],
                       dets: Sequence[tuple[F32, F32, NDArray[np.int64]]], classes: Sequence[str],
                       subset: Sequence[NDArray[np.bool_]] | None = None) -> dict[str, Any]:
    """Per-class COCO metrics (``edge_tools.eval.metrics``, pycocotools' rules, 100 detections per image):
    mAP@[.5:.95], mAP50, mAP75 = means over the classes that have ground truth, and AP per class.

    ``subset`` restricts the ground truth to some objects (e.g. the heavy-overlap ones): the others are *ignored*
    exactly as COCO ignores objects outside an area range (a detection matched to them is neither a true nor a
    false positive; unmatched detections stay false positives).
    """
    counted = [int(sum(int((np.asarray(gl) == c)[subset[i] if subset is not None else slice(None)].sum())
                       for i, gl in enumerate(gt_labels))) for c in range(len(classes))]
    out: dict[str, Any] = {"objects": int(sum(counted)), "objects_per_class": dict(zip(classes, counted, strict=True))}
    if not any(len(d[1]) for d in dets):
        return out | {"mAP": 0.0, "mAP50": 0.0, "mAP75": 0.0, "AP_per_class": {}}
    curves = coco_curves(_images(gts, gt_labels, dets, classes, subset), class_aware=True)
    present = [c for c in classes if c in curves]  # classes with ground truth (not ignored), in their order
    per = {c: float(curves[c][100].precision.mean()) for c in present}
    return out | {"mAP": float(np.mean([per[c] for c in present])) if present else 0.0,
                  "mAP50": float(np.mean([curves[c][100].precision[0].mean() for c in present])) if present else 0.0,
                  "mAP75": float(np.mean([curves[c][100].precision[5].mean() for c in present])) if present else 0.0,
                  "AP_per_class": per}


# -- real images ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RealImage:
    """One annotated real X-ray image (evaluation only)."""

    source: str
    name: str
    image: ConditionedImage
    boxes: NDArray[np.float64]


def realdata_root() -> Path:
    """``../shared/realdata`` next to the repository."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "realdata"


def real_images(root: Path, as_pseudo_colour: bool) -> list[RealImage]:
    """GDXray (grey; as a grey RGB picture when ``as_pseudo_colour``) and SIXray (pseudo-colour) with boxes."""
    import cv2

    out: list[RealImage] = []
    gd = root / "xray" / "gdxray"
    rows: dict[str, list[list[float]]] = {}
    with (gd / "boxes_xyxy.csv").open() as f:
        for r in csv.DictReader(f):
            rows.setdefault(r["image"], []).append([float(r[k]) for k in ("x_min", "y_min", "x_max", "y_max")])
    for name, boxes in sorted(rows.items()):
        grey: Any = cv2.imread(str(gd / "images" / name), cv2.IMREAD_UNCHANGED)
        if grey is None:
            continue
        if grey.ndim == 3:
            grey = grey[:, :, 0]
        if as_pseudo_colour:
            g8 = grey if grey.dtype == np.uint8 else (grey / 257).astype(np.uint8)
            img = from_pseudo_colour(np.repeat(g8[:, :, None], 3, axis=2))
        else:
            img = from_grey(grey)
        out.append(RealImage("gdxray", name, img, np.asarray(boxes)))
    sx = root / "xray" / "sixray"
    for xml in sorted((sx / "annotations_voc").glob("*.xml")):
        tree = ET.parse(xml).getroot()
        fname = tree.findtext("filename") or xml.with_suffix(".jpg").name
        bgr: Any = cv2.imread(str(sx / "images" / fname), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        boxes2 = [[float(o.findtext(f"bndbox/{k}") or 0) for k in ("xmin", "ymin", "xmax", "ymax")]
                  for o in tree.iter("object")]
        out.append(RealImage("sixray", fname, from_pseudo_colour(bgr, "bgr"), np.asarray(boxes2)))
    return out


def real_recall(detect: DetectFn, contract: InputContract, images: Sequence[RealImage], threshold: float,
                iou: float, top: int = 20, vote_iou: float = 0.0) -> dict[str, tuple[float, int, int]]:
    """Per source: (recall at IoU 0.5 with ≤ ``top`` proposals, images, boxes).

    Images that cannot provide the contract's channels (e.g. ``h`` from a pseudo-colour picture) are left out.
    """
    per: dict[str, tuple[list[NDArray[np.float64]], list[NDArray[np.float64]]]] = {}
    for r in images:
        if not set(contract.channels) <= r.image.available:
            continue
        h, w = r.image.shape
        x = compose(r.image, contract)
        b, s = detect(x)
        kb, _ = postprocess(b[0], s[0], threshold, iou, top, vote_iou)
        g = geometry((0, 0, w, h), contract)
        item = np.stack([(kb[:, 0] - g.pad_x) / g.scale_x, (kb[:, 1] - g.pad_y) / g.scale_y,
                         (kb[:, 2] - g.pad_x) / g.scale_x, (kb[:, 3] - g.pad_y) / g.scale_y], 1) if len(kb) \
            else np.zeros((0, 4))
        gts, dets = per.setdefault(r.source, ([], []))
        gts.append(r.boxes)
        dets.append(item)
    return {src: (recall_at(g, d), len(g), sum(len(x) for x in g)) for src, (g, d) in per.items()}


# -- scorer tables (seed 000) ----------------------------------------------------------------------------------
def auroc(scores: NDArray[np.floating], labels: NDArray[np.bool_]) -> float:
    """Area under the ROC curve (``edge_tools.eval.metrics.auroc``: ranks, ties count half); NaN with one class."""
    value = metrics_auroc(scores, labels)
    return float("nan") if value is None else value


def item_table(obj_scores: NDArray[np.floating], obj_item: NDArray[np.int64], item_label: dict[int, bool],
               threshold: float) -> dict[str, float]:
    """Seed-000 item-level figures: recall, FPR, accuracy at ``threshold`` (max rule), AUROC_M, AUROC_A."""
    items = sorted(item_label)
    mx = np.array([obj_scores[obj_item == i].max() for i in items])
    mean = np.array([obj_scores[obj_item == i].mean() for i in items])
    y = np.array([item_label[i] for i in items])
    pred = mx >= threshold
    return {"recall": float(pred[y].mean()), "fpr": float(pred[~y].mean()), "accuracy": float((pred == y).mean()),
            "auroc_m": auroc(mx, y), "auroc_a": auroc(mean, y), "items": float(len(items)),
            "threat_items": float(y.sum())}


def object_table(obj_scores: NDArray[np.floating], threat: NDArray[np.bool_], threshold: float) -> dict[str, float]:
    """Object-level recall/FPR at ``threshold`` and AUROC (threat objects vs every benign object)."""
    pred = obj_scores >= threshold
    return {"recall": float(pred[threat].mean()), "fpr": float(pred[~threat].mean()),
            "auroc": auroc(obj_scores, threat)}
