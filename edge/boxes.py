"""Box geometry on xyxy arrays: areas, pairwise intersections and IoU.

Why a module of its own: the detect stage (NMS, box voting), the offline metrics (``edge.eval.metrics``) and the
training recipes' crop labelling all measure overlaps, and must measure them the same way; the detect stage cannot
import ``edge.eval`` (that package runs the pipeline, so the import would be circular). Must not: import anything
beyond numpy.

Boxes are (N, 4) ``x1, y1, x2, y2`` in any one pixel frame. An inverted or empty box has area 0 and overlaps
nothing, so ratios never divide by zero and never go negative.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

F64 = NDArray[np.float64]


def _as_boxes(a: ArrayLike) -> F64:
    return np.asarray(a, dtype=np.float64).reshape(-1, 4)


def box_area(a: ArrayLike) -> F64:
    """(N,) areas; widths and heights below zero count as zero."""
    b = _as_boxes(a)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def intersection(a: ArrayLike, b: ArrayLike) -> F64:
    """(A, B) areas of the pairwise intersections."""
    a_, b_ = _as_boxes(a), _as_boxes(b)
    w = np.clip(np.minimum(a_[:, None, 2], b_[None, :, 2]) - np.maximum(a_[:, None, 0], b_[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a_[:, None, 3], b_[None, :, 3]) - np.maximum(a_[:, None, 1], b_[None, :, 1]), 0, None)
    return np.asarray(w * h, np.float64)


def box_iou(a: ArrayLike, b: ArrayLike, area_a: F64 | None = None, area_b: F64 | None = None) -> F64:
    """(A, B) intersection over union (0 where both boxes are empty, never NaN).

    ``area_a`` / ``area_b`` are the boxes' :func:`box_area` when the caller already has them: greedy NMS compares one
    box against the rest on every iteration and computes every area once instead.
    """
    inter = intersection(a, b)
    area_a = box_area(a) if area_a is None else area_a
    area_b = box_area(b) if area_b is None else area_b
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
