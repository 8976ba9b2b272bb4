"""Packing the virtual-scanner detectors: ``edge-export train pack-detector`` (class-agnostic, or with its box
refiner) and ``pack-detector-classes`` (class-aware, plus how often each backend's labels agree with PyTorch's).

Where it sits: after :mod:`export.recipes.detector` / :mod:`export.recipes.detector_classes` trained a checkpoint;
it picks the calibration and parity items from a sim cache, writes the manifest's provenance (steps, widths,
starting point) and hands the rest to :func:`export.recipes.pack.pack`. Must not: train, or be imported by the
runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from edge.bundles.loader import Bundle
from edge.bundles.manifest import ScoreNormalisation
from edge.bundles.outputs import DECISION_THRESHOLD_KEY, NMS_IOU_KEY, VOTE_IOU_KEY, Role
from export.recipes import detector as det
from export.recipes import detector_classes as dc
from export.recipes.pack import pack
from export.recipes.simdata import load_det

CALIB_ITEMS, PARITY_FROM = 150, 110
"""The first 150 cache items are packed: 110 calibrate INT8, the last 40 check parity."""


def thresholds(score: float, nms_iou: float, vote_iou: float) -> dict[str, float]:
    """A detector bundle's ``thresholds``: score, NMS IoU, and the box voting IoU unless it is 0 (off)."""
    return {DECISION_THRESHOLD_KEY: score, NMS_IOU_KEY: nms_iou, **({VOTE_IOU_KEY: vote_iou} if vote_iou > 0 else {})}


def _inputs(calib: Path, channels: str, size: int) -> NDArray[np.float32]:
    ds = load_det(calib, limit=CALIB_ITEMS)
    return np.stack([det.plain(im, channels, size) for im in ds.images[:CALIB_ITEMS]])


def pack_agnostic(ckpt: Path, calib: Path, out: Path, *, threshold: float, nms_iou: float, vote_iou: float,
                  name: str, version: str, notes: str, training_items: str, fp32_rtol: float, int8_max_drop: float,
                  iterations: int, progress: Callable[[str], None]) -> Bundle:
    """Export a class-agnostic detector or refiner checkpoint (ONNX FP32, OpenVINO FP32 + INT8), verify parity and
    write the bundle; its training_data says what the checkpoint's steps trained."""
    model, cfg = det.checkpoint_model(ckpt, iterations)
    x = _inputs(calib, cfg.channels, cfg.size)
    frozen = " (frozen batch norms)" if cfg.init and Path(cfg.init).is_dir() else ""
    start = f", fine-tuned from {cfg.init}{frozen}" if cfg.init else ""
    context = ", context on C5" if getattr(cfg, "context", False) else ""
    shape = getattr(model.refine, "shape", None)
    if shape is not None:  # a refiner checkpoint: its steps trained the refiner only, on the frozen detector
        start = (f", box refiner (top {shape.top}, crop {shape.crop} px, {shape.iterations} passes) trained on the "
                 f"frozen detector {cfg.init}")
    return pack(model, Role.DETECTOR, det.contract(cfg.channels, cfg.size), thresholds(threshold, nms_iou, vote_iou),
                ScoreNormalisation(), x[:PARITY_FROM], x[PARITY_FROM:CALIB_ITEMS], out, name, version,
                training_data=f"virtual scanner (sim/), scanner seed 7, {cfg.steps} steps x {cfg.batch} items "
                              f"from {training_items}, seed {cfg.seed}, width {cfg.width}, FPN {cfg.fpn}"
                              f"{context}{start}; palette/contrast/noise/scale/flip augmentation; no real images",
                notes=notes or "class-agnostic OLN-style detector (centerness x IoU quality, no classes); "
                               "see docs/models.md", progress=progress, fp32_rtol=fp32_rtol,
                int8_max_drop=int8_max_drop)


def pack_classes(ckpt: Path, calib: Path, out: Path, *, threshold: float, nms_iou: float, vote_iou: float,
                 name: str, version: str, notes: str, training_items: str, int8: bool, fp32_rtol: float,
                 int8_max_drop: float, progress: Callable[[str], None]) -> tuple[Bundle, dict[str, Any]]:
    """Export the class-aware detector (boxes, scores, labels), verify parity, write the bundle with its classes;
    also return, per backend, the share of the parity candidates above ``threshold`` whose label agrees with
    PyTorch's (the parity report checks scores, not labels)."""
    state = torch.load(ckpt, weights_only=False)
    cfg: dc.ClassTrainConfig = state["config"]
    model = dc.build(ckpt, 3 if cfg.channels == "pc" else 1, cfg.width, cfg.fpn, getattr(cfg, "context", False))
    x = _inputs(calib, cfg.channels, cfg.size)
    sampling = f", LVIS repeat-factor sampling t = {cfg.repeat_thresh}" if cfg.repeat_thresh > 0 else ""
    bundle = pack(model, Role.DETECTOR, det.contract(cfg.channels, cfg.size), thresholds(threshold, nms_iou, vote_iou),
                  ScoreNormalisation(), x[:PARITY_FROM], x[PARITY_FROM:CALIB_ITEMS], out, name, version,
                  classes=dc.CLASSES,
                  training_data=f"virtual scanner (sim/), scanner seed 7, {state['step']} steps x {cfg.batch} items "
                                f"from {training_items}, seed {cfg.seed}, initialised from {cfg.init or 'scratch'}"
                                f"{sampling}; classes from sim kinds (export.recipes.detector_classes.KIND_TO_CLASS); "
                                "no real images",
                  notes=notes or "class-aware detector (OLN-style box/quality head + 8-class focal head, score = "
                                 "p(class) x quality, labels = argmax); per-class NMS, then box voting at "
                                 "thresholds.vote_iou; see docs/models.md",
                  progress=progress, fp32_rtol=fp32_rtol, int8_max_drop=int8_max_drop, int8=int8,
                  optional_outputs=("labels",))
    return bundle, _label_agreement(model, bundle, x[PARITY_FROM:CALIB_ITEMS], threshold)


def _label_agreement(model: torch.nn.Module, bundle: Bundle, x: NDArray[np.float32],
                     threshold: float) -> dict[str, Any]:
    from export.parity import Candidate, run_candidate

    with torch.inference_mode():
        _, ref_s, ref_l = model(torch.from_numpy(x))
    sel = ref_s.numpy() >= threshold
    agreement: dict[str, float] = {}
    for m in bundle.manifest.models:
        backend = "onnxruntime" if m.format == "onnx" else "openvino"
        got = run_candidate(Candidate(backend, m.precision, bundle.root / m.path), x)
        agreement[f"{backend}/{m.precision}"] = float((got["labels"][sel] == ref_l.numpy()[sel]).mean())
    return {"candidates_above_threshold": int(sel.sum()), "label_agreement": agreement}
