"""Detect: the whole conditioned item through the detector bundle → object boxes in item pixels.

The detector returns dense candidates in model-input pixels; here they are thresholded with the bundle's
``score`` threshold, mapped back through the composer's resize geometry, suppressed with NMS (class-agnostic,
or per class when the bundle returns ``labels``) and capped at ``max_objects`` highest-scoring boxes; a bundle
with a ``vote_iou`` threshold then refines each kept box by box voting (:func:`vote`). A
class-aware bundle's labels index its manifest ``classes``; an index outside them is a bundle error, not a
silently unlabelled box. A detector imported from another tool (bundle.yaml ``layout``: YOLOv8/v5, end-to-end,
mmdeploy, torchvision) is decoded to the same dense candidates by ``edge.bundles.layouts`` first; from there
every detector takes the same path (NMS per class, so an already-suppressed model loses only near-duplicates).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edge.boxes import box_iou, nms
from edge.bundles.layouts import decode_outputs
from edge.bundles.outputs import NMS_IOU_KEY, VOTE_IOU_KEY, DetectorOutputs
from edge.condition.composer import compose, geometry, region_of
from edge.errors import BackendError
from edge.records import BoxXyxy, ConditionedItem, DetectedItem, Detection
from edge.screening import ModelHolder

__all__ = ["DetectStage", "DetectedItem", "Detection", "nms", "suppress", "vote"]


def suppress(boxes: NDArray[np.float32], scores: NDArray[np.float32], labels: NDArray[np.int64] | None,
             iou_threshold: float, top: int) -> list[int]:
    """Indices of the boxes kept, best first: boxes under one pixel wide or high are dropped, then NMS
    (class-agnostic, or per class when ``labels`` are given), then the ``top`` highest scores.

    The detect stage runs this in item pixels; training evaluation (``export/recipes``) in model-input pixels.
    """
    valid = np.flatnonzero((boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1))
    kept = nms(boxes[valid], scores[valid], iou_threshold, None if labels is None else labels[valid])
    return [int(valid[k]) for k in kept[:top]]


VOTE_POWER = 4.0
"""Box voting weights candidates by score**VOTE_POWER: the best boxes dominate, near-ties average (on sim-val with
detector-agnostic v1.1 at vote IoU 0.6: AR@100 0.397 → 0.430 with power 4, 0.420 with power 1)."""


def vote(boxes: NDArray[np.float32], scores: NDArray[np.float32], labels: NDArray[np.int64] | None,
         keep: list[int], iou_threshold: float) -> NDArray[np.float32]:
    """The kept boxes refined by box voting: each becomes the score-weighted mean of every candidate (kept or
    suppressed, of the same label) that overlaps it at IoU >= ``iou_threshold``.

    Why: NMS keeps the single best-scored box, but the quality score ranks well and localises only roughly; the
    suppressed neighbours carry independent estimates of the same edges, and their weighted mean is tighter
    (Gidaris & Komodakis 2015). The kept set, its order, scores and labels do not change, so the number of boxes
    and crops stays as it was; only the box edges move (which can move a box across IoU 0.5 with its object,
    either way).
    """
    if not keep:
        return np.zeros((0, 4), np.float32)
    b = boxes.astype(np.float64)
    iou = box_iou(b[keep], b)
    w = (iou >= iou_threshold) * np.power(scores.astype(np.float64), VOTE_POWER)[None, :]
    if labels is not None:
        w = w * (labels[keep][:, None] == labels[None, :])
    w[np.arange(len(keep)), keep] = np.maximum(w[np.arange(len(keep)), keep], 1e-12)  # a box always votes for itself
    return np.asarray(w @ b / w.sum(axis=1, keepdims=True), np.float32)


PRE_NMS_TOP = 2000
"""An imported detector's candidates above the score threshold that go into NMS, best first (ties at the cut all go
in). A YOLO head has 8,400 candidates at 640x640, and a badly matched or untrained model may put thousands above the
threshold; greedy NMS grows faster than linearly (random boxes of 80 classes: 0.4 ms for 300 candidates, 13 ms for
1,000, 107 ms for 3,000), so the cut keeps one item's NMS bounded: all 8,400 of a YOLOv8 head above the threshold
take 6.7 ms with the cut and 24.5 ms without, with the same 32 boxes kept (``benchmarks/bench_layouts.py``, shared
2-core machine at load ~16). Ultralytics cuts at 30,000 with a GPU NMS. This project's own detectors (2,100
candidates) are not cut."""


class DetectStage:
    """Runs the detector of the current model set on each item."""

    def __init__(self, models: ModelHolder, max_objects: int = 32) -> None:
        self._models = models
        self._max_objects = max_objects

    def __call__(self, item: ConditionedItem) -> DetectedItem:
        models = self._models.current
        detector = models.detector
        manifest = detector.bundle.manifest
        contract = detector.bundle.contract
        height, width = item.image.shape
        batch = compose(item.image, contract)
        if manifest.layout is None:
            out = detector.session.predict(batch)
        else:  # an imported detector: its own output layout, decoded to the same dense candidates
            out = decode_outputs(manifest.outputs, manifest.layout, detector.session.run(batch),
                                 len(manifest.classes), contract.height, contract.width, f"bundle {manifest.name}")
        if not isinstance(out, DetectorOutputs):
            raise BackendError(f"bundle {manifest.name} did not return detector outputs")
        threshold = float(manifest.thresholds.get("score", 0.3))
        iou = float(manifest.thresholds.get(NMS_IOU_KEY, 0.5))
        boxes, scores = out.boxes[0], out.scores[0]
        labels = out.labels[0] if out.labels is not None else None
        if not (np.all(np.isfinite(boxes)) and np.all(np.isfinite(scores))):
            raise BackendError(f"bundle {manifest.name} returned non-finite boxes or scores")
        classes = manifest.classes
        if labels is not None and labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise BackendError(f"bundle {manifest.name} returned labels {int(labels.min())}..{int(labels.max())} "
                               f"but names {len(classes)} classes")
        g = geometry(region_of((0, 0, width, height), height, width), contract)
        mask = scores >= threshold
        if manifest.layout is not None and np.count_nonzero(mask) > PRE_NMS_TOP:
            mask &= scores >= np.partition(scores[mask], -PRE_NMS_TOP)[-PRE_NMS_TOP]
        boxes, scores = boxes[mask], scores[mask]
        labels = labels[mask] if labels is not None else None
        # Model-input pixels back to item pixels, clipped to the item.
        x1 = np.clip((boxes[:, 0] - g.pad_x) / g.scale_x, 0, width)
        y1 = np.clip((boxes[:, 1] - g.pad_y) / g.scale_y, 0, height)
        x2 = np.clip((boxes[:, 2] - g.pad_x) / g.scale_x, 0, width)
        y2 = np.clip((boxes[:, 3] - g.pad_y) / g.scale_y, 0, height)
        item_boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
        keep = suppress(item_boxes, scores.astype(np.float32), labels, iou, self._max_objects)
        vote_iou = float(manifest.thresholds.get(VOTE_IOU_KEY, 0.0))
        final = (vote(item_boxes, scores.astype(np.float32), labels, keep, vote_iou) if vote_iou > 0
                 else item_boxes[keep])
        detections = tuple(
            Detection(
                box=BoxXyxy(*(float(v) for v in box)),
                score=float(scores[k]),
                label=classes[int(labels[k])] if labels is not None else None,
            )
            for k, box in zip(keep, final, strict=True)
        )
        return DetectedItem(item.meta, item.image, detections, models)
