"""Box suppression shared by the detect stage and training evaluation, on hand-made boxes."""

from __future__ import annotations

import numpy as np

from edge.stages.detect import suppress


def test_drops_slivers_suppresses_overlaps_and_caps() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [5, 5, 5.5, 30], [70, 0, 80, 10]],
                     np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.99, 0.6], np.float32)
    assert suppress(boxes, scores, None, 0.5, 10) == [0, 2, 4]  # 3 is a sliver, 1 overlaps 0 (IoU 0.68)
    assert suppress(boxes, scores, None, 0.5, 2) == [0, 2]
    labels = np.array([0, 1, 0, 0, 1], np.int64)
    assert suppress(boxes, scores, labels, 0.5, 10) == [0, 1, 2, 4]  # different classes do not suppress
