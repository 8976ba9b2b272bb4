"""The figures of ``edge-export train eval-detector`` and ``eval-detector-classes``: a detector (a checkpoint, or
a bundle rebuilt or run as shipped) → its raw outputs on a held-out sim cache (and the real images) → COCO
metrics, overlap subsets and a threshold sweep.

Where it sits: between the recipes' CLI (``export.recipes.cli_detector``, which parses arguments) and
the metrics (``export.recipes.evaluate``, the one COCO evaluator underneath). Detector outputs are post-processed
as the runtime's detect stage does. Must not: train, write files, or be imported by the runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from edge.boxes import box_iou
from export.errors import RecipeOptionError
from export.recipes import detector as det
from export.recipes import detector_classes as dc
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
from export.recipes.inputs import sim_only
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


def _torch_detect(model: torch.nn.Module) -> DetectFn:
    def run(x: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        with torch.inference_mode():
            b, s = model(torch.from_numpy(x))
        return b.numpy(), s.numpy()
    return run


def eval_agnostic(ckpt: Path | None, bundle: Path | None, data: Path, threshold: float, nms_iou: float,
                  real_threshold: float, vote_iou: float | None, iterations: int,
                  pack_vote_iou: float) -> dict[str, object]:
    """``train eval-detector``: :func:`agnostic_report` of a checkpoint (a refiner's at ``iterations`` passes, 0 =
    as trained) or of a class-agnostic bundle rebuilt from its ONNX weights (its input channels and size).
    ``vote_iou`` None: the bundle's ``thresholds.vote_iou``, or ``pack_vote_iou`` (what the packs write) for a
    checkpoint."""
    if ckpt is not None:
        model, cfg = det.checkpoint_model(ckpt, iterations)
    elif bundle is not None:
        from edge.bundles import load_bundle
        from edge.bundles.outputs import VOTE_IOU_KEY

        model = det.agnostic_from_bundle(bundle)
        shipped = load_bundle(bundle, verify_hashes=False)
        width, fpn = det.size_of(model)
        cfg = det.TrainConfig(channels=",".join(str(c) for c in shipped.contract.channels),
                              size=shipped.contract.width, width=width, fpn=fpn, context=det.has_context(model))
        if vote_iou is None:
            vote_iou = float(shipped.manifest.thresholds.get(VOTE_IOU_KEY, 0.0))
    vote_iou = pack_vote_iou if vote_iou is None else vote_iou
    torch.set_num_threads(1)
    return agnostic_report(_torch_detect(model), cfg.channels, cfg.size, data, threshold, nms_iou, real_threshold,
                           vote_iou)


def _checkpoint_outputs(ckpt: Path, ds: dc.ClassDetSet) -> tuple[list[Labelled], int, dict[str, object]]:
    """A class-aware checkpoint's raw (boxes, scores, labels) per item, its input size and its name."""
    state = torch.load(ckpt, weights_only=False)
    cfg: dc.ClassTrainConfig = state["config"]
    model = dc.build(ckpt, 3 if cfg.channels == "pc" else 1, cfg.width, cfg.fpn, getattr(cfg, "context", False))
    raw: list[Labelled] = []
    for i in range(0, len(ds.images), 16):
        x = np.stack([det.plain(im, cfg.channels, cfg.size) for im in ds.images[i:i + 16]])
        with torch.inference_mode():
            b, s, lab = model(torch.from_numpy(x))
        raw.extend((b[k].numpy(), s[k].numpy(), lab[k].numpy()) for k in range(len(x)))
    return raw, cfg.size, {"checkpoint": str(ckpt), "step": int(state["step"])}


def _bundle_outputs(bundle: Path, ds: dc.ClassDetSet, vote_iou: float | None) -> tuple[
        list[Labelled], int, dict[str, object], float | None]:
    """A class-aware bundle's raw outputs (its ONNX FP32 model under ONNX Runtime), input size, name, and
    ``vote_iou`` or else its ``thresholds.vote_iou``."""
    from edge.bundles import load_bundle
    from edge.bundles.outputs import VOTE_IOU_KEY
    from export.parity import Candidate, run_candidate

    loaded = load_bundle(bundle, verify_hashes=False)
    man = loaded.manifest
    if not man.classes:
        raise RecipeOptionError(f"{bundle} is not a class-aware detector (no classes)")
    if tuple(man.classes) != tuple(dc.CLASSES):
        raise RecipeOptionError(f"{bundle} has classes {list(man.classes)}, the recipes {list(dc.CLASSES)}")
    onnx = next(mm for mm in man.models if mm.format == "onnx" and mm.precision == "fp32")
    channels, size = ",".join(str(c) for c in loaded.contract.channels), loaded.contract.width
    if vote_iou is None:
        vote_iou = float(man.thresholds.get(VOTE_IOU_KEY, 0.0))
    x = np.stack([det.plain(im, channels, size) for im in ds.images])
    got = run_candidate(Candidate("onnxruntime", onnx.precision, loaded.root / onnx.path), x, threads=1)
    raw = [(got["boxes"][k], got["scores"][k], got["labels"][k]) for k in range(len(x))]
    return raw, size, {"bundle": f"{man.name}@{man.version}"}, vote_iou


def eval_classes(data: Path, ckpt: Path | None, bundle: Path | None, threshold: float, nms_iou: float,
                 heavy_iou: Sequence[float], vote_iou: float | None, pack_vote_iou: float) -> dict[str, object]:
    """``train eval-detector-classes``: :func:`class_report` of a class-aware checkpoint or bundle on a sim cache,
    with the heavy-overlap subsets at each of ``heavy_iou``; ``vote_iou`` None as in :func:`eval_agnostic`."""
    torch.set_num_threads(1)
    sim_only(data, "eval-detector-classes")
    ds = dc.load_class_det(data)
    if ckpt is not None:
        raw, size, source = _checkpoint_outputs(ckpt, ds)
    elif bundle is not None:
        raw, size, source, vote_iou = _bundle_outputs(bundle, ds, vote_iou)
    vote_iou = pack_vote_iou if vote_iou is None else vote_iou
    scale = size / ds.images.shape[-1]
    gts, gls = zip(*[ds.labelled(i) for i in range(len(ds.images))], strict=True)
    heavy = {t: [ds.heavy(i, t)[ds.labels[i] >= 0] for i in range(len(ds.images))] for t in heavy_iou}
    report = class_report(raw, [g * scale for g in gts], gls, heavy, dc.CLASSES, threshold, nms_iou, vote_iou)
    return {**source, "vote_iou": vote_iou, "items": len(gts), **report}
