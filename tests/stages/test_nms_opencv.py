"""``edge.boxes.nms`` (OpenCV's NMSBoxes / NMSBoxesBatched) keeps exactly the boxes, in exactly the order, that the
numpy greedy loop it replaced kept: class-agnostic and per label, with ties, empty and inverted boxes, negative
coordinates, scores at or below zero, and through ``suppress``'s top-k."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from edge.boxes import box_area, box_iou, nms
from edge.stages.detect import suppress


def _greedy(boxes: NDArray[np.float32], scores: NDArray[np.float32], iou_threshold: float) -> list[int]:
    """The detect stage's NMS before OpenCV (edge/stages/detect.py at 3a95147), kept verbatim as the reference."""
    order = np.argsort(-scores, kind="stable")
    areas = box_area(boxes)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest], areas[i:i + 1], areas[rest])[0] <= iou_threshold]
    return keep


def _greedy_suppress(boxes: NDArray[np.float32], scores: NDArray[np.float32], labels: NDArray[np.int64] | None,
                     iou_threshold: float, top: int) -> list[int]:
    """``suppress`` before OpenCV, verbatim."""
    valid = np.flatnonzero((boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1))
    if labels is None:
        keep = [int(valid[k]) for k in _greedy(boxes[valid], scores[valid], iou_threshold)]
    else:
        keep = []
        for cls in np.unique(labels[valid]):
            idx = valid[labels[valid] == cls]
            keep.extend(int(idx[k]) for k in _greedy(boxes[idx], scores[idx], iou_threshold))
        keep.sort(key=lambda k: -float(scores[k]))
    return keep[:top]


def _random_boxes(rng: np.random.Generator, n: int, span: float, offset: float = 0.0
                  ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    xy = rng.uniform(offset, offset + span, (n, 2))
    boxes = np.hstack([xy, xy + rng.uniform(-2, span / 3, (n, 2))]).astype(np.float32)  # some inverted or empty
    scores = rng.uniform(-0.2, 1.0, n).astype(np.float32)
    scores[rng.integers(0, n, n // 5)] = 0.5  # ties, within and across labels
    return boxes, scores


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("iou", [0.3, 0.5, 0.7])
def test_agnostic_keep_list_is_the_greedy_loops(seed: int, iou: float) -> None:
    rng = np.random.default_rng(seed)
    boxes, scores = _random_boxes(rng, int(rng.integers(1, 400)), 300.0, offset=-50.0 if seed % 2 else 0.0)
    assert nms(boxes, scores, iou) == _greedy(boxes, scores, iou)


@pytest.mark.parametrize("seed", range(40))
def test_per_label_and_top_k_keep_list_is_the_greedy_loops(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(1, 400))
    boxes, scores = _random_boxes(rng, n, 200.0, offset=-30.0 if seed % 2 else 0.0)
    labels = rng.integers(0, 6, n).astype(np.int64)
    for top in (5, 32, n):
        assert suppress(boxes, scores, labels, 0.5, top) == _greedy_suppress(boxes, scores, labels, 0.5, top)
        assert suppress(boxes, scores, None, 0.5, top) == _greedy_suppress(boxes, scores, None, 0.5, top)


def test_integer_boxes_at_exactly_the_threshold_are_kept_as_before() -> None:
    # IoU exactly 0.5 (50/100) is kept (<=), exactly as the loop; 0.6 of 3/5 likewise at threshold 0.6.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 10], [0, 0, 6, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    for iou in (0.5, 0.6):
        assert nms(boxes[:2], scores[:2], iou) == _greedy(boxes[:2], scores[:2], iou) == [0, 1]
        assert nms(boxes[2:], scores[2:], iou) == _greedy(boxes[2:], scores[2:], iou)
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5) == []
