"""The papers' metrics in plain numpy: item (bag) counts, ROC/AUROC, the 95%-benign threshold, COCO box AP/AR.

Where it sits: under ``edge eval`` (``edge_tools.eval.report`` feeds it the pipeline's outcomes) and meant to be reused
by the training recipes, so that a model is judged by one implementation everywhere. Tested against
scikit-learn's ``roc_auc_score``/``roc_curve`` and pycocotools' ``COCOeval`` on the same inputs; neither is
imported here. Must not: import torch, scikit-learn or pycocotools, or read files.

Conventions:
* Positive = threat (anomalous) item; an item alarms when its score is at or above the threshold (the service's
  rule, ``edge.stages.decide``).
* ``auroc`` is the Mann–Whitney statistic (ties count one half), which equals the trapezoidal area under
  ``roc_curve`` and scikit-learn's value.
* COCO box metrics follow ``pycocotools.cocoeval`` exactly for boxes without crowd flags and the area range
  "all": IoU thresholds 0.50:0.05:0.95, 101 recall points, greedy matching in score order (each detection takes
  the unmatched ground truth of highest IoU, ignored ground truth last), precision made monotone, categories
  without ground truth left out of the mean. Ignored ground truth (``ImageBoxes.gt_ignore``) behaves as COCO's
  objects outside the area range. This is the one COCO evaluator: ``edge eval`` and the training recipes
  (``export.recipes.evaluate``) both use it; pycocotools is only the tests' reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edge.boxes import box_iou

F64 = NDArray[np.float64]

IOU_THRESHOLDS: F64 = np.linspace(0.5, 0.95, 10)
RECALL_POINTS: F64 = np.linspace(0.0, 1.0, 101)


# ---------------------------------------------------------------------------------------------- item (bag) level
@dataclass(frozen=True, slots=True)
class ItemCounts:
    """Confusion counts of items (positive = threat) and the rates the seed papers report.

    Rates whose denominator is zero are None (a set without benign items has no FPR), never 0.
    """

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def positives(self) -> int:
        return self.tp + self.fn

    @property
    def negatives(self) -> int:
        return self.fp + self.tn

    @property
    def recall(self) -> float | None:
        """Threat items alarmed / threat items (= TP%/100 of seeds 001–002)."""
        return _ratio(self.tp, self.positives)

    @property
    def fpr(self) -> float | None:
        """Benign items alarmed / benign items (= FP%/100 of seeds 001–002)."""
        return _ratio(self.fp, self.negatives)

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.tp + self.tn, self.positives + self.negatives)

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def f1(self) -> float | None:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def item_counts(labels: ArrayLike, alarms: ArrayLike) -> ItemCounts:
    """Counts from per-item truth (True = threat) and per-item alarm (True = ALARM or UNSCREENED)."""
    y = np.asarray(labels, dtype=bool)
    a = np.asarray(alarms, dtype=bool)
    if y.shape != a.shape:
        raise ValueError(f"labels {y.shape} and alarms {a.shape} differ in shape")
    return ItemCounts(tp=int((y & a).sum()), fp=int((~y & a).sum()), tn=int((~y & ~a).sum()),
                      fn=int((y & ~a).sum()))


MIN_BENIGN_ITEMS = 20
"""Fewer benign items than this cannot place a 95% operating point (it would sit on the highest score or two)."""


def benign_rate_threshold(benign_scores: ArrayLike, rate: float = 0.95) -> float:
    """The lowest threshold that tags at least ``rate`` of benign items benign (score < threshold).

    With ``k = ceil(rate * n)`` benign items that must stay below it, the threshold is the smallest float above
    the k-th lowest benign score. A benign score of +inf (an UNSCREENED item) gives +inf: no threshold can clear
    an item the box did not see.

    Raises:
        ValueError: no benign scores, or ``rate`` outside (0, 1].
    """
    s = np.sort(np.asarray(benign_scores, dtype=np.float64))
    if s.size == 0:
        raise ValueError("no benign items: the 95%-benign threshold is undefined")
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate={rate}: expected 0 < rate <= 1")
    k = max(1, math.ceil(rate * s.size - 1e-9))
    return float(np.nextafter(s[k - 1], np.inf))


# ---------------------------------------------------------------------------------------------- ROC
@dataclass(frozen=True, slots=True)
class RocCurve:
    """ROC points from (0, 0) to (1, 1): at ``thresholds[i]`` (alarm iff score >= it) the rates are
    ``fpr[i]``/``tpr[i]``. ``thresholds[0]`` is +inf (nothing alarms)."""

    fpr: F64
    tpr: F64
    thresholds: F64


def _binary(scores: ArrayLike, labels: ArrayLike) -> tuple[F64, NDArray[np.bool_]]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in shape")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s, y


def roc_curve(scores: ArrayLike, labels: ArrayLike) -> RocCurve:
    """Every distinct score as a threshold (scikit-learn's ``roc_curve(drop_intermediate=False)``).

    Raises:
        ValueError: shapes differ, NaN scores, or only one class present.
    """
    s, y = _binary(scores, labels)
    p, n = int(y.sum()), int((~y).sum())
    if p == 0 or n == 0:
        raise ValueError(f"ROC needs both classes; got {p} threat and {n} benign items")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_value = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last_of_value].astype(np.float64)
    fps = (last_of_value + 1) - tps
    return RocCurve(np.r_[0.0, fps / n], np.r_[0.0, tps / p], np.r_[np.inf, s_sorted[last_of_value]])


def _average_ranks(values: F64) -> F64:
    """1-based ranks with ties given their mean rank (as ``scipy.stats.rankdata``)."""
    order = np.argsort(values, kind="mergesort")
    sorted_v = values[order]
    starts = np.r_[0, np.flatnonzero(sorted_v[1:] != sorted_v[:-1]) + 1]
    ends = np.r_[starts[1:], sorted_v.size]
    mean_rank = (starts + ends + 1) / 2.0  # ranks starts+1 .. ends, averaged
    ranks = np.empty(values.size, np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auroc(scores: ArrayLike, labels: ArrayLike) -> float | None:
    """Area under the ROC curve; None when only one class is present (undefined, not 0.5)."""
    s, y = _binary(scores, labels)
    p, n = int(y.sum()), int((~y).sum())
    if p == 0 or n == 0:
        return None
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - p * (p + 1) / 2.0) / (p * n))


# ---------------------------------------------------------------------------------------------- boxes
@dataclass(frozen=True, slots=True)
class ImageBoxes:
    """Ground truth and detections of one image for the COCO metrics.

    ``gt_boxes`` (G, 4) and ``det_boxes`` (D, 4) are xyxy; ``det_scores`` (D,); labels are class names (a
    detection without a class has label None and matches nothing in the class-aware metrics). ``gt_ignore`` (G,)
    marks ground truth that is *ignored* as COCO ignores objects outside its area range: it counts neither as
    found nor as missed, and a detection matched to it is neither a true nor a false positive (the training
    recipes' overlap subsets); None = nothing ignored.
    """

    gt_boxes: F64
    gt_labels: tuple[str, ...]
    det_boxes: F64
    det_scores: F64
    det_labels: tuple[str | None, ...]
    gt_ignore: NDArray[np.bool_] | None = None

    @staticmethod
    def of(gt_boxes: ArrayLike, gt_labels: Sequence[str], det_boxes: ArrayLike, det_scores: ArrayLike,
           det_labels: Sequence[str | None] | None = None, gt_ignore: ArrayLike | None = None) -> ImageBoxes:
        gb = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        db = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
        ds = np.asarray(det_scores, dtype=np.float64).reshape(-1)
        dl = tuple(det_labels) if det_labels is not None else (None,) * len(db)
        ig = None if gt_ignore is None else np.asarray(gt_ignore, dtype=bool).reshape(-1)
        if len(gb) != len(gt_labels) or not len(db) == len(ds) == len(dl) or (ig is not None and len(ig) != len(gb)):
            raise ValueError(f"box/label counts differ: gt {len(gb)}/{len(gt_labels)}"
                             f"{'' if ig is None else f'/{len(ig)} ignore flags'}, "
                             f"detections {len(db)}/{len(ds)}/{len(dl)}")
        return ImageBoxes(gb, tuple(gt_labels), db, ds, dl, ig)


@dataclass(frozen=True, slots=True)
class CocoMetrics:
    """COCO box metrics (area "all"): ``map`` = AP@[.50:.95] at 100 detections per image, ``map50``,
    ``map75``; ``ar`` maps k to AR@k. ``categories`` counts the classes with ground truth that were averaged.
    Values are None when there is no ground truth at all."""

    map: float | None
    map50: float | None
    map75: float | None
    ar: dict[int, float | None]
    categories: int


@dataclass(frozen=True, slots=True)
class CocoCurves:
    """One class's accumulated evaluation at ``max_det`` detections per image, as pycocotools' ``eval``:
    ``precision`` (T, R) at the 10 IoU thresholds and 101 recall points, ``recall`` (T,) final recall."""

    precision: F64
    recall: F64


@dataclass(frozen=True, slots=True)
class _Matched:
    scores: F64  # (D,) this image's detections of one class, best first, at most max(max_dets)
    matched: NDArray[np.bool_]  # (T, D)
    ignored: NDArray[np.bool_]  # (T, D): matched to ignored ground truth, neither true nor false positive
    n_gt: int  # ground truth not ignored


def _match(gt: F64, det: F64, scores: F64, max_det: int, ignore: NDArray[np.bool_]) -> _Matched:
    # pycocotools sorts ground truth with the ignored last (stable) and stops looking among them once a detection
    # has a match that is not ignored.
    g_order = np.argsort(ignore, kind="mergesort")
    gt, ignore = gt[g_order], ignore[g_order]
    order = np.argsort(-scores, kind="mergesort")[:max_det]
    det, scores = det[order], scores[order]
    ious = box_iou(det, gt)
    matched = np.zeros((len(IOU_THRESHOLDS), len(det)), bool)
    ignored = np.zeros((len(IOU_THRESHOLDS), len(det)), bool)
    for t, thr in enumerate(IOU_THRESHOLDS):
        gt_taken = np.zeros(len(gt), bool)
        for d in range(len(det)):
            best, m = min(float(thr), 1 - 1e-10), -1
            for g in range(len(gt)):
                if gt_taken[g]:
                    continue
                if m > -1 and not ignore[m] and ignore[g]:
                    break
                # pycocotools: ``if ious < iou: continue`` so an equal IoU moves the match to the later box.
                if ious[d, g] < best:
                    continue
                best, m = float(ious[d, g]), g
            if m >= 0:
                gt_taken[m] = True
                matched[t, d] = True
                ignored[t, d] = bool(ignore[m])
    # pycocotools ignores an unmatched detection outside the area range; an inverted box (one side negative) has
    # a negative area there, so it is neither a true nor a false positive.
    outside = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1]) < 0
    ignored |= ~matched & outside[None, :]
    return _Matched(scores, matched, ignored, int((~ignore).sum()))


def _accumulate(per_image: Sequence[_Matched], max_det: int) -> CocoCurves:
    """Precision at the 101 recall points (T, R) and final recall (T,) of one class."""
    n_gt = sum(m.n_gt for m in per_image)
    scores = np.concatenate([m.scores[:max_det] for m in per_image]) if per_image else np.zeros(0)
    empty = np.zeros((len(IOU_THRESHOLDS), 0), bool)
    matched = np.concatenate([m.matched[:, :max_det] for m in per_image], axis=1) if per_image else empty
    ignored = np.concatenate([m.ignored[:, :max_det] for m in per_image], axis=1) if per_image else empty
    order = np.argsort(-scores, kind="mergesort")
    matched, ignored = matched[:, order], ignored[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
    precision = np.zeros((len(IOU_THRESHOLDS), len(RECALL_POINTS)))
    recall = np.zeros(len(IOU_THRESHOLDS))
    for t in range(len(IOU_THRESHOLDS)):
        if tp.shape[1] == 0:
            continue
        rc = tp[t] / n_gt
        pr = tp[t] / (tp[t] + fp[t] + np.spacing(1))
        recall[t] = rc[-1]
        pr = np.maximum.accumulate(pr[::-1])[::-1]  # precision envelope: best precision at any higher recall
        idx = np.searchsorted(rc, RECALL_POINTS, side="left")
        ok = idx < len(pr)
        precision[t, ok] = pr[idx[ok]]
    return CocoCurves(precision, recall)


def coco_curves(images: Sequence[ImageBoxes], class_aware: bool, max_dets: Sequence[int] = (100,)
                ) -> dict[str, dict[int, CocoCurves]]:
    """Per class with ground truth (not ignored), its curves at each of ``max_dets`` detections per image:
    what pycocotools' ``accumulate`` holds in ``eval['precision']``/``eval['recall']`` for the area "all"."""
    top = max(max_dets)
    classes = sorted({label for im in images for label in im.gt_labels}) if class_aware else ["object"]
    out: dict[str, dict[int, CocoCurves]] = {}
    for cls in classes:
        matched: list[_Matched] = []
        for im in images:
            if class_aware:
                g = np.asarray([lab == cls for lab in im.gt_labels], bool)
                d = np.asarray([lab == cls for lab in im.det_labels], bool)
            else:
                g = np.ones(len(im.gt_boxes), bool)
                d = np.ones(len(im.det_boxes), bool)
            if not g.any() and not d.any():
                continue
            ignore = im.gt_ignore[g] if im.gt_ignore is not None else np.zeros(int(g.sum()), bool)
            matched.append(_match(im.gt_boxes[g], im.det_boxes[d], im.det_scores[d], top, ignore))
        if sum(m.n_gt for m in matched) == 0:
            continue  # pycocotools leaves classes without ground truth out of every mean
        out[cls] = {k: _accumulate(matched, k) for k in max_dets}
    return out


def coco_box_metrics(images: Sequence[ImageBoxes], class_aware: bool,
                     max_dets: Sequence[int] = (1, 10, 100)) -> CocoMetrics:
    """COCO AP/AR of boxes; class-agnostic (every box one class) or class-aware (labels must agree).

    AP uses the largest of ``max_dets`` detections per image, as pycocotools' summary does.
    """
    top = max(max_dets)
    per_class = list(coco_curves(images, class_aware, max_dets).values())
    if not per_class:
        return CocoMetrics(None, None, None, {k: None for k in max_dets}, 0)
    precision = np.stack([c[top].precision for c in per_class])  # (K, T, R)
    ar: dict[int, float | None] = {k: float(np.mean([c[k].recall for c in per_class])) for k in max_dets}
    return CocoMetrics(float(precision.mean()), float(precision[:, 0].mean()), float(precision[:, 5].mean()), ar,
                       len(per_class))


def box_recall(images: Sequence[ImageBoxes], iou: float = 0.5) -> tuple[int, int]:
    """(ground-truth boxes covered by some detection at IoU ≥ ``iou``, ground-truth boxes), class-agnostic and
    without a one-to-one matching: the figure the product brief asks of the detector on real images."""
    hit = total = 0
    for im in images:
        total += len(im.gt_boxes)
        if len(im.gt_boxes) and len(im.det_boxes):
            hit += int((box_iou(im.gt_boxes, im.det_boxes).max(axis=1) >= iou).sum())
    return hit, total
