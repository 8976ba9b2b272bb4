"""An imported YOLOv8 head's post-processing on the box: decode ``[1, 4+nc, 8400]`` (``edge.bundles.layouts``),
score threshold, the pre-NMS cut (``edge.stages.detect.PRE_NMS_TOP``) and class-aware NMS (``suppress``), as the
detect stage runs them, for 100 to 8,400 candidates above the threshold (clusters of jittered boxes around 30
objects of a 640 x 640 input, 80 classes), and without the cut. Median of 21 calls (5 without the cut), one
OpenCV thread; JSON on stdout.

    .venv/bin/python benchmarks/bench_layouts.py > /tmp/bench_layouts.json
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.bundles.layouts import decode
from edge.bundles.manifest import DetectorLayout, LayoutKind
from edge.stages.detect import PRE_NMS_TOP, suppress

NC, K, SIZE, THRESHOLD, IOU, TOP = 80, 8400, 640, 0.25, 0.7, 32


def head(above: int, seed: int = 0) -> NDArray[np.float32]:
    """A ``[1, 84, 8400]`` output with ``above`` candidates over the threshold, clustered on 30 objects."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(40, SIZE - 40, (30, 2))
    size = rng.uniform(20, 200, (30, 2))
    k = rng.integers(0, 30, K)
    pred = np.zeros((1, 4 + NC, K), np.float32)
    pred[0, 0:2] = (centre[k] + rng.normal(0, 8, (K, 2))).T
    pred[0, 2:4] = (size[k] * rng.uniform(0.8, 1.25, (K, 2))).T
    pred[0, 4:] = rng.uniform(0, 0.05, (NC, K))
    hot = rng.choice(K, above, replace=False)
    pred[0, 4 + (k[hot] % NC), hot] = rng.uniform(THRESHOLD, 1.0, above)
    return pred


def post(pred: NDArray[np.float32], cut: int = PRE_NMS_TOP) -> NDArray[np.float32]:
    """The kept boxes, best first."""
    out = decode(DetectorLayout(LayoutKind.YOLOV8), {"predictions": ("output0", pred)}, NC, SIZE, SIZE)
    scores = out.scores[0]
    mask = scores >= THRESHOLD
    if np.count_nonzero(mask) > cut:
        mask &= scores >= np.partition(scores[mask], -cut)[-cut]
    labels = out.labels[0][mask] if out.labels is not None else None
    boxes = out.boxes[0][mask]
    return boxes[suppress(boxes, scores[mask], labels, IOU, TOP)]


def median_ms(fn: Callable[[], object], runs: int = 21) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    cv2.setNumThreads(1)
    rows = []
    layout = DetectorLayout(LayoutKind.YOLOV8)
    for above in (100, 1000, 2000, 8400):
        pred = head(above)
        rows.append({"candidates_above_threshold": above, "kept": len(post(pred)),
                     "decode_ms": round(median_ms(lambda p=pred: decode(layout, {"predictions": ("o", p)}, NC,
                                                                          SIZE, SIZE)), 2),
                     "post_processing_ms": round(median_ms(lambda p=pred: post(p)), 2),
                     "without_cut_ms": round(median_ms(lambda p=pred: post(p, K), runs=5), 2),
                     "same_boxes_without_cut": bool(np.array_equal(post(pred), post(pred, K)))})
    print(json.dumps({"benchmark": "bench_layouts", "pre_nms_top": PRE_NMS_TOP, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
