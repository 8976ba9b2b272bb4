"""Decoders for the output layouts of detectors exported by other tools, to the runtime's dense candidates.

Where it sits: between a backend's raw outputs (by graph name) and the detect stage. A bundle made by
``edge-export import-detector`` records its ``layout`` (:class:`edge.bundles.manifest.DetectorLayout`); the detect
stage hands the raw outputs here and gets the same :class:`~edge.bundles.outputs.DetectorOutputs` a native
detector gives (boxes ``x1, y1, x2, y2`` in model-input pixels, one score and one class index per candidate), so
thresholding, undoing the letterbox, class-aware NMS and the ``max_objects`` cap stay the stage's one code path.
The export toolchain decodes with the same functions for parity and INT8 checks.

One small decoder per layout; each checks the shape it is given and raises :class:`LayoutError` naming the
output, its shape and what the layout expects (an item then becomes UNSCREENED ``model_error``; at import time the
same message refuses the model). Must not: threshold, suppress or cap (the stage does), or import a runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from edge.bundles.manifest import BoxUnits, DetectorLayout, LayoutKind, OutputSpec
from edge.bundles.outputs import DetectorOutputs
from edge.errors import BackendError

Named = Mapping[str, tuple[str, np.ndarray]]
"""Layout field -> (graph output name, array)."""


class LayoutError(BackendError):
    """Raw outputs that do not have the shape the bundle's layout says."""


def gather(outputs: Sequence[OutputSpec], layout: DetectorLayout, raw: Mapping[str, np.ndarray],
           where: str) -> dict[str, tuple[str, np.ndarray]]:
    """The arrays the layout reads, by field, with their graph names; LayoutError when one is missing."""
    named: dict[str, tuple[str, np.ndarray]] = {}
    for want in layout.fields:
        spec = next((o for o in outputs if o.field == want), None)
        if spec is None or spec.name not in raw:
            name = None if spec is None else spec.name
            raise LayoutError(f"{where}: the {layout.kind} layout reads output {want!r} (graph name {name!r}), "
                              f"which is missing; the model returned {sorted(raw)}")
        named[want] = (spec.name, np.asarray(raw[spec.name]))
    return named


def _shape_error(where: str, layout: LayoutKind, name: str, arr: np.ndarray, expected: str) -> LayoutError:
    return LayoutError(f"{where}: output {name!r} has shape {list(arr.shape)}; the {layout} layout expects "
                       f"{expected}")


def _batched(arr: np.ndarray, ndim: int) -> np.ndarray:
    """Add the batch axis some exporters leave out (torchvision, some end-to-end exports)."""
    return arr[None] if arr.ndim == ndim - 1 else arr


def _xywh_to_xyxy(xywh: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    cx, cy, w, h = xywh[..., 0], xywh[..., 1], xywh[..., 2] * 0.5, xywh[..., 3] * 0.5
    return np.stack([cx - w, cy - h, cx + w, cy + h], axis=-1).astype(np.float32)


def _yolov8(named: Named, nc: int, where: str) -> DetectorOutputs:
    name, arr = named["predictions"]
    arr = _batched(arr, 3)
    if arr.ndim != 3 or arr.shape[1] != 4 + nc:
        hint = (" (it looks transposed: [1, N, 4+nc] is not a YOLOv8 export; try --layout yolov5 if it has an "
                "objectness column)") if arr.ndim == 3 and arr.shape[2] in (4 + nc, 5 + nc) else ""
        raise _shape_error(where, LayoutKind.YOLOV8, name, arr, f"[1, 4+nc, N] = [1, {4 + nc}, N] for {nc} "
                           f"classes{hint}")
    pred = arr.astype(np.float32, copy=False).transpose(0, 2, 1)  # (N, K, 4+nc)
    cls = pred[..., 4:]
    labels = cls.argmax(axis=-1)
    scores = np.take_along_axis(cls, labels[..., None], axis=-1)[..., 0]
    return DetectorOutputs(boxes=_xywh_to_xyxy(pred[..., :4]), scores=np.ascontiguousarray(scores, np.float32),
                           labels=labels.astype(np.int64))


def _yolov5(named: Named, nc: int, where: str) -> DetectorOutputs:
    name, arr = named["predictions"]
    arr = _batched(arr, 3)
    if arr.ndim != 3 or arr.shape[2] != 5 + nc:
        hint = " (it looks like a YOLOv8 export: try --layout yolov8)" if arr.ndim == 3 and arr.shape[1] == 4 + nc \
            else ""
        raise _shape_error(where, LayoutKind.YOLOV5, name, arr, f"[1, N, 5+nc] = [1, N, {5 + nc}] for {nc} "
                           f"classes{hint}")
    pred = arr.astype(np.float32, copy=False)
    cls = pred[..., 5:]
    labels = cls.argmax(axis=-1)
    scores = pred[..., 4] * np.take_along_axis(cls, labels[..., None], axis=-1)[..., 0]
    return DetectorOutputs(boxes=_xywh_to_xyxy(pred[..., :4]), scores=np.ascontiguousarray(scores, np.float32),
                           labels=labels.astype(np.int64))


def _labels_of(values: np.ndarray) -> npt.NDArray[np.int64]:
    """Class indices exported as floats (end-to-end YOLO) or integers; NaN/inf become -1 (refused later)."""
    v = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(v), np.rint(v), -1).astype(np.int64)


def _end2end(named: Named, nc: int, where: str) -> DetectorOutputs:
    name, arr = named["detections"]
    arr = _batched(arr, 3)
    if arr.ndim != 3 or arr.shape[2] != 6:
        raise _shape_error(where, LayoutKind.END2END, name, arr, "[1, N, 6] (x1, y1, x2, y2, score, class)")
    det = arr.astype(np.float32, copy=False)
    return DetectorOutputs(boxes=np.ascontiguousarray(det[..., :4]), scores=np.ascontiguousarray(det[..., 4]),
                           labels=_labels_of(det[..., 5]))


def _dets_labels(named: Named, nc: int, where: str) -> DetectorOutputs:
    name, dets = named["dets"]
    lname, labels = named["labels"]
    dets, labels = _batched(dets, 3), _batched(labels, 2)
    if dets.ndim != 3 or dets.shape[2] != 5:
        raise _shape_error(where, LayoutKind.DETS_LABELS, name, dets, "dets [1, N, 5] (x1, y1, x2, y2, score)")
    if labels.shape != dets.shape[:2]:
        raise _shape_error(where, LayoutKind.DETS_LABELS, lname, labels,
                           f"labels [1, N] matching dets {list(dets.shape)}")
    d = dets.astype(np.float32, copy=False)
    return DetectorOutputs(boxes=np.ascontiguousarray(d[..., :4]), scores=np.ascontiguousarray(d[..., 4]),
                           labels=_labels_of(labels))


def _torchvision(named: Named, nc: int, where: str) -> DetectorOutputs:
    bname, boxes = named["boxes"]
    sname, scores = named["scores"]
    lname, labels = named["labels"]
    boxes, scores, labels = _batched(boxes, 3), _batched(scores, 2), _batched(labels, 2)
    if boxes.ndim != 3 or boxes.shape[2] != 4:
        raise _shape_error(where, LayoutKind.TORCHVISION, bname, boxes, "boxes [K, 4] or [1, K, 4]")
    for name, arr in ((sname, scores), (lname, labels)):
        if arr.shape != boxes.shape[:2]:
            raise _shape_error(where, LayoutKind.TORCHVISION, name, arr,
                               f"[K] or [1, K] matching boxes {list(boxes.shape)}")
    return DetectorOutputs(boxes=boxes.astype(np.float32), scores=scores.astype(np.float32),
                           labels=_labels_of(labels))


DECODERS: dict[LayoutKind, Callable[[Named, int, str], DetectorOutputs]] = {
    LayoutKind.YOLOV8: _yolov8,
    LayoutKind.YOLOV5: _yolov5,
    LayoutKind.END2END: _end2end,
    LayoutKind.DETS_LABELS: _dets_labels,
    LayoutKind.TORCHVISION: _torchvision,
}


def decode(layout: DetectorLayout, named: Named, num_classes: int, height: int, width: int,
           where: str = "detector") -> DetectorOutputs:
    """Dense candidates of every image in the batch, boxes in model-input pixels (``height`` x ``width``).

    Raises:
        LayoutError: an output's shape does not fit the layout (the message names it and its shape).
    """
    out = DECODERS[layout.kind](named, num_classes, where)
    if layout.boxes is BoxUnits.NORMALISED:
        scale = np.array([width, height, width, height], np.float32)
        return DetectorOutputs(boxes=out.boxes * scale, scores=out.scores, labels=out.labels)
    return out


def decode_outputs(outputs: Sequence[OutputSpec], layout: DetectorLayout, raw: Mapping[str, np.ndarray],
                   num_classes: int, height: int, width: int, where: str = "detector") -> DetectorOutputs:
    """:func:`gather` then :func:`decode`: raw outputs by graph name to dense candidates."""
    return decode(layout, gather(outputs, layout, raw, where), num_classes, height, width, where)
