"""``edge.boxes``: the one box geometry that NMS, box voting, the metrics and crop labelling share."""

from __future__ import annotations

import numpy as np

from edge.boxes import box_area, box_iou, intersection
from edge.stages.detect import nms
from export.recipes.detcrops import _covered, _touch


def test_box_iou_by_hand() -> None:
    iou = box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10], [3, 3, 3, 3]])
    np.testing.assert_allclose(iou, [[50 / 150, 0.0, 1.0, 0.0]])


def test_inverted_and_empty_boxes_have_no_area_and_overlap_nothing() -> None:
    boxes = [[10, 10, 0, 0], [5, 5, 5, 9], [0, 0, 4, 2]]
    np.testing.assert_array_equal(box_area(boxes), [0.0, 0.0, 8.0])
    # An inverted box's negative width times negative height must not pass for a positive area or overlap.
    np.testing.assert_array_equal(box_iou(boxes[:1], [[0, 0, 10, 10]]), [[0.0]])
    assert box_iou([[0, 0, 0, 0]], [[0, 0, 0, 0]])[0, 0] == 0.0
    assert box_iou(np.zeros((0, 4)), boxes).shape == (0, 3)


def test_intersection_drives_the_crop_labels_and_nms() -> None:
    det = np.array([[0, 0, 10, 10], [0, 0, 2, 2]], np.float64)
    gt = np.array([[5, 5, 25, 25]], np.float64)
    np.testing.assert_array_equal(intersection(det, gt), [[25.0], [0.0]])
    np.testing.assert_allclose(_covered(det, gt), [[25 / 400], [0.0]])  # share of the object inside the box
    np.testing.assert_allclose(_touch(det, gt), [[25 / 100], [0.0]])  # over the smaller box
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 30, 10]], np.float32)
    # IoU of the first two is 90/110 = 0.82: suppressed at 0.8, kept at 0.85.
    assert nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.8) == [0, 2]
    assert nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.85) == [0, 1, 2]


def test_nms_with_areas_computed_once_matches_greedy_on_the_full_iou_matrix() -> None:
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 60, (300, 2))
    boxes = np.hstack([xy, xy + rng.uniform(-2, 25, (300, 2))]).astype(np.float32)  # some inverted
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    iou = box_iou(boxes, boxes)
    alive, expected = np.ones(300, bool), []
    for i in np.argsort(-scores, kind="stable"):
        if alive[i]:
            expected.append(int(i))
            alive &= iou[i] <= 0.5
    assert nms(boxes, scores, 0.5) == expected
    # Precomputed areas give the same ratios as areas computed inside.
    np.testing.assert_array_equal(box_iou(boxes[:5], boxes, box_area(boxes[:5]), box_area(boxes)), iou[:5])
