"""NMS: OpenCV (``edge.boxes.nms``, what the detect stage runs) against the numpy greedy loop it replaced.

Candidates as a detector leaves them after its score threshold: clusters of jittered boxes around objects of a
640 x 1000 px item, float32 scores. Both keep the same boxes (asserted here, and on random boxes in
``tests/stages/test_nms_opencv.py``); the figure is the median of 101 calls each, one thread.

    .venv/bin/python benchmarks/bench_nms.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.boxes import box_area, box_iou, nms


def greedy(boxes: NDArray[np.float32], scores: NDArray[np.float32], iou_threshold: float) -> list[int]:
    """The detect stage's NMS before OpenCV (edge/stages/detect.py at 3a95147)."""
    order = np.argsort(-scores, kind="stable")
    areas = box_area(boxes)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest], areas[i:i + 1], areas[rest])[0] <= iou_threshold]
    return keep


def candidates(n: int, objects: int, seed: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    rng = np.random.default_rng(seed)
    centre = rng.uniform([40, 40], [600, 960], (objects, 2))
    size = rng.uniform(20, 200, (objects, 2))
    k = rng.integers(0, objects, n)
    c = centre[k] + rng.normal(0, 8, (n, 2))
    s = size[k] * rng.uniform(0.8, 1.25, (n, 2))
    boxes = np.hstack([c - s / 2, c + s / 2]).astype(np.float32)
    return boxes, rng.uniform(0.3, 1.0, n).astype(np.float32)


def median_ms(fn: Callable[[], object], runs: int = 101) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    cv2.setNumThreads(1)
    print(f"{'candidates':>10} {'objects':>7} {'kept':>5} {'numpy ms':>9} {'opencv ms':>9} {'speed-up':>8}")
    for n, objects in ((100, 15), (300, 20), (1000, 30), (3000, 40)):
        boxes, scores = candidates(n, objects, seed=n)
        kept = nms(boxes, scores, 0.5)
        assert kept == greedy(boxes, scores, 0.5)
        old = median_ms(partial(greedy, boxes, scores, 0.5))
        new = median_ms(partial(nms, boxes, scores, 0.5))
        print(f"{n:>10} {objects:>7} {len(kept):>5} {old:>9.3f} {new:>9.3f} {old / new:>7.1f}x")


if __name__ == "__main__":
    main()
