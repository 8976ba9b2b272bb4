"""The figures of ``edge-export train eval-detector`` and ``eval-detector-classes``: a detector's raw outputs on a
held-out sim cache (and the real images) → COCO metrics, overlap subsets and a threshold sweep.

Where it sits: between the recipes' CLI (``export.recipes.cli``, which parses arguments and builds the model) and
the metrics (``export.recipes.evaluate``, the one COCO evaluator underneath). Detector outputs are post-processed
as the runtime's detect stage does. Must not: train, write files, or be imported by the runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.boxes import box_iou
from export.recipes import detector as det
from export.recipes.evaluate import (
    OVERLAP_BANDS,
    DetectFn,
    coco_class_metrics,
    coco_metrics,
    overlap_band,
    postprocess,
    postprocess_labelled,
    real_images,
    real_recall,
    realdata_root,
    recall_at,
)
from export.recipes.simdata import load_det

AGNOSTIC_SWEEP = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65)
CLASS_SWEEP = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
Labelled = tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]


def agnostic_report(run: DetectFn, channels: str, size: int, data: Path, threshold: float, nms_iou: float,
                    real_threshold: float, vote_iou: float) -> dict[str, object]:
    """AR@100 / mAP on the cache ``data`` (whole set and by overlap band), a threshold sweep at the detect stage's
    32 boxes, and recall@IoU0.5 (≤ 20 proposals) on the real images when they are present."""
    ds = load_det(data)
    scale = size / ds.images.shape[-1]
    raw: list[tuple[Any, Any]] = []
    for i in range(0, len(ds.images), 16):
        x = np.stack([det.plain(im, channels, size) for im in ds.images[i:i + 16]])
        b, s = run(x)
        raw.extend((b[k], s[k]) for k in range(len(x)))
    dets = [postprocess(b, s, threshold, nms_iou, 100, vote_iou) for b, s in raw]
    gts = [g * scale for g in ds.boxes]
    m: dict[str, float] = coco_metrics(gts, dets)
    m["recall50@20"] = recall_at(gts, [d[0][:20] for d in dets])
    out: dict[str, object] = {"sim": m, "items": len(gts), "boxes": int(sum(len(g) for g in gts))}
    # the same figures on the objects that overlap no other, a little, or heavily (is AR@100 lost to clutter?)
    out["sim_by_overlap"] = {band: coco_metrics(gts, dets, [overlap_band(g, band) for g in gts])
                             for band in OVERLAP_BANDS}
    sweep = {}
    for t in AGNOSTIC_SWEEP:
        kept = [postprocess(b, s, t, nms_iou, 32, vote_iou)[0] for b, s in raw]  # as the detect stage
        rec = recall_at(gts, kept)
        n = sum(len(k) for k in kept)
        prec = sum(int((box_iou(k, g).max(axis=1) >= 0.5).sum()) for k, g in zip(kept, gts, strict=True)
                   if len(k) and len(g)) / max(n, 1)
        sweep[t] = {"recall50": round(rec, 3), "precision50": round(prec, 3), "dets_per_gt": round(n / max(
            sum(len(g) for g in gts), 1), 2)}
    out["threshold_sweep"] = sweep
    root = realdata_root()
    if root.is_dir():
        contract = det.contract(channels, size)
        real = real_images(root, as_pseudo_colour=channels == "pc")
        out["real"] = real_recall(run, contract, real, real_threshold, nms_iou, 20, vote_iou)
    return out


def class_report(raw: Sequence[Labelled], gts: Sequence[NDArray[np.floating]], gls: Sequence[NDArray[np.int64]],
                 heavy: dict[float, list[NDArray[np.bool_]]], classes: Sequence[str], threshold: float,
                 nms_iou: float, vote_iou: float) -> dict[str, object]:
    """Per-class mAP overall and on each heavy-overlap subset (``heavy``: IoU → per item, which ground truth is
    in it), plus a sweep of class-correct recall and precision at IoU 0.5 with the detect stage's 32 boxes.
    ``gts`` are in model-input pixels."""
    dets = [postprocess_labelled(b, s, lab, threshold, nms_iou, 100, vote_iou) for b, s, lab in raw]
    out: dict[str, object] = {"all": coco_class_metrics(gts, gls, dets, classes)}
    for t, subset in heavy.items():
        out[f"heavy_overlap_iou{t:g}"] = coco_class_metrics(gts, gls, dets, classes, subset)
    sweep = {}
    n_gt = sum(len(g) for g in gts)
    for t in CLASS_SWEEP:
        kept = [postprocess_labelled(b, s, lab, t, nms_iou, 32, vote_iou) for b, s, lab in raw]
        hit = tp = n = 0
        for (kb, _, kl), g, gl in zip(kept, gts, gls, strict=True):
            n += len(kb)
            if len(kb) and len(g):
                m = box_iou(g, kb) * (np.asarray(gl)[:, None] == kl[None, :])
                hit += int((m.max(axis=1) >= 0.5).sum())
                tp += int((m.max(axis=0) >= 0.5).sum())
        sweep[t] = {"recall50": round(hit / max(n_gt, 1), 3), "precision50": round(tp / max(n, 1), 3),
                    "dets_per_gt": round(n / max(n_gt, 1), 2)}
    out["threshold_sweep"] = sweep
    return out
