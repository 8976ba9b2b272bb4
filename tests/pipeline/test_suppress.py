"""Box suppression shared by the detect stage and training evaluation, on hand-made boxes."""

from __future__ import annotations

import numpy as np

from edge.stages.detect import VOTE_POWER, suppress, vote


def test_drops_slivers_suppresses_overlaps_and_caps() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [5, 5, 5.5, 30], [70, 0, 80, 10]],
                     np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.99, 0.6], np.float32)
    assert suppress(boxes, scores, None, 0.5, 10) == [0, 2, 4]  # 3 is a sliver, 1 overlaps 0 (IoU 0.68)
    assert suppress(boxes, scores, None, 0.5, 2) == [0, 2]
    labels = np.array([0, 1, 0, 0, 1], np.int64)
    assert suppress(boxes, scores, labels, 0.5, 10) == [0, 1, 2, 4]  # different classes do not suppress


def test_box_voting_moves_edges_by_the_weighted_mean_of_overlapping_candidates() -> None:
    """Kept box 0 (score 1) and its suppressed neighbour 1 (score 0.5, IoU 0.91) vote with weights 1 and 0.5**4;
    box 2 is too far (IoU < 0.6) and a box of another class never votes."""
    boxes = np.array([[0, 0, 10, 10], [0, 0, 11, 10], [0, 0, 20, 10], [0, 0, 12, 10], [40, 40, 50, 50]], np.float32)
    scores = np.array([1.0, 0.5, 0.9, 0.5, 0.8], np.float32)
    labels = np.array([0, 0, 0, 1, 0], np.int64)
    keep = suppress(boxes, scores, labels, 0.5, 10)
    assert keep == [0, 2, 4, 3]
    voted = vote(boxes, scores, labels, keep, 0.6)
    w1 = 0.5 ** VOTE_POWER
    assert np.allclose(voted[0], [0, 0, (10 + 11 * w1) / (1 + w1), 10], atol=1e-5)
    assert np.allclose(voted[2], boxes[4]) and np.allclose(voted[3], boxes[3])  # alone (box 3: its own class)
    # box 2 (0..20) is voted for by box 0's group only if IoU >= 0.6: 10/20 = 0.5, so it stays
    assert np.allclose(voted[1], boxes[2])
    # without labels, box 3 (IoU 0.83 with box 0) joins box 0's vote
    keep = suppress(boxes, scores, None, 0.5, 10)
    agnostic = vote(boxes, scores, None, keep, 0.6)
    assert agnostic[0][2] > voted[0][2]
    assert vote(boxes, scores, None, [], 0.6).shape == (0, 4)
