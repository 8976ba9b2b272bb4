"""Metric code on hand-computed cases and against scikit-learn and pycocotools on the same inputs."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from edge_tools.eval.metrics import (
    ImageBoxes,
    auroc,
    benign_rate_threshold,
    box_recall,
    coco_box_metrics,
    item_counts,
    roc_curve,
)


# ------------------------------------------------------------------------------------------- hand-computed
def test_item_counts_by_hand() -> None:
    # 4 threat items (3 alarmed), 6 benign (1 alarmed).
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    alarms = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    c = item_counts(labels, alarms)
    assert (c.tp, c.fp, c.tn, c.fn) == (3, 1, 5, 1)
    assert c.recall == pytest.approx(0.75)
    assert c.fpr == pytest.approx(1 / 6)
    assert c.accuracy == pytest.approx(0.8)
    assert c.precision == pytest.approx(0.75)
    assert c.f1 == pytest.approx(0.75)


def test_undefined_rates_are_none() -> None:
    c = item_counts([1, 1], [0, 1])
    assert c.fpr is None and c.recall == pytest.approx(0.5)
    assert item_counts([0, 0], [0, 0]).precision is None
    with pytest.raises(ValueError, match="shape"):
        item_counts([1, 0], [1])


def test_auroc_by_hand() -> None:
    # Positives 0.9, 0.4; negatives 0.5, 0.1. Pairs (p > n): (0.9,0.5) (0.9,0.1) (0.4,0.1) -> 3/4.
    assert auroc([0.9, 0.4, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.75)
    # A tie between a positive and a negative counts one half: pairs 1 + 0.5 of 2.
    assert auroc([0.5, 0.5, 0.2], [1, 0, 0]) == pytest.approx(0.75)
    assert auroc([0.3, 0.2], [1, 1]) is None


def test_roc_curve_by_hand() -> None:
    roc = roc_curve([0.9, 0.4, 0.5, 0.1], [1, 1, 0, 0])
    assert np.isinf(roc.thresholds[0])
    np.testing.assert_allclose(roc.thresholds[1:], [0.9, 0.5, 0.4, 0.1])
    np.testing.assert_allclose(roc.tpr, [0, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(roc.fpr, [0, 0, 0.5, 0.5, 1.0])
    assert np.trapezoid(roc.tpr, roc.fpr) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="both classes"):
        roc_curve([0.1, 0.2], [0, 0])


def test_infinite_bag_scores_tie_with_each_other() -> None:
    # -inf = no object scored, +inf = UNSCREENED; ties among them must count one half, like finite ties.
    scores = np.array([-np.inf, -np.inf, np.inf, 0.3, np.inf, -np.inf])
    labels = np.array([1, 0, 1, 0, 0, 1], bool)
    finite = np.nan_to_num(scores, posinf=1e9, neginf=-1e9)
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, finite))
    np.testing.assert_allclose(roc_curve(scores, labels).tpr, sk_roc_curve(labels, finite,
                                                                          drop_intermediate=False)[1])


def test_benign_rate_threshold_by_hand() -> None:
    benign = np.arange(1, 21, dtype=float)  # 1..20: 19 of 20 (95%) must score below the threshold
    t = benign_rate_threshold(benign, 0.95)
    assert 19.0 < t < 19.0001
    assert (benign < t).mean() == pytest.approx(0.95)
    # Ties: the threshold must clear the whole tie, so more than 95% end up benign.
    tied = np.array([1.0] * 10 + [2.0] * 10)
    assert (tied < benign_rate_threshold(tied)).all()
    # An UNSCREENED benign item (score +inf) can never be tagged benign.
    assert np.isinf(benign_rate_threshold([np.inf, np.inf, 0.1], 0.95))
    with pytest.raises(ValueError, match="no benign"):
        benign_rate_threshold([])


def test_coco_by_hand() -> None:
    # One image, two ground-truth boxes; detections by score: a perfect match (0.9), a miss (0.8), the second box
    # at IoU 0.75 (0.7). Up to IoU 0.75 the precision envelope is 1 to recall 0.5, then 2/3 to recall 1.0: of the
    # 101 recall points, 51 (0.00-0.50) read 1 and 50 read 2/3. Above 0.75 only the first box matches.
    gt = [[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]]
    det = [[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [20.0, 0.0, 30.0, 7.5]]
    m = coco_box_metrics([ImageBoxes.of(gt, ["a", "a"], det, [0.9, 0.8, 0.7])], class_aware=False)
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert m.map50 == pytest.approx(expected)
    assert m.map75 == pytest.approx(expected)
    assert m.map == pytest.approx((6 * expected + 4 * 51 / 101) / 10)
    assert m.ar[1] == pytest.approx(0.5)
    assert m.ar[100] == pytest.approx((6 * 1.0 + 4 * 0.5) / 10)


def test_box_recall_by_hand() -> None:
    images = [ImageBoxes.of([[0, 0, 10, 10], [20, 20, 30, 30]], ["x", "x"], [[0, 0, 10, 9]], [0.5]),
              ImageBoxes.of([[0, 0, 4, 4]], ["x"], np.zeros((0, 4)), [])]
    assert box_recall(images, 0.5) == (1, 3)


# ------------------------------------------------------------------------------------------- vs scikit-learn
@pytest.mark.parametrize("seed", range(6))
def test_auroc_and_roc_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[0], labels[1] = True, False
    scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
    if seed % 2:
        scores = np.round(scores, 1)  # many ties
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    fpr, tpr, thr = sk_roc_curve(labels, scores, drop_intermediate=False)
    ours = roc_curve(scores, labels)
    np.testing.assert_allclose(ours.fpr, fpr)
    np.testing.assert_allclose(ours.tpr, tpr)
    np.testing.assert_allclose(ours.thresholds[1:], thr[1:])


# ------------------------------------------------------------------------------------------- vs pycocotools
def _random_images(rng: np.random.Generator, n_images: int, classes: list[str]) -> list[ImageBoxes]:
    out = []
    for _ in range(n_images):
        g = int(rng.integers(0, 6))
        xy = rng.uniform(0, 200, (g, 2))
        wh = rng.uniform(5, 60, (g, 2))
        gt = np.concatenate([xy, xy + wh], axis=1)
        gl = [classes[int(rng.integers(len(classes)))] for _ in range(g)]
        dets: list[np.ndarray] = []
        dl: list[str | None] = []
        for box, label in zip(gt, gl, strict=True):  # jittered copies of the truth, some relabelled
            for _ in range(int(rng.integers(0, 3))):
                dets.append(box + rng.normal(0, 4, 4))
                dl.append(label if rng.random() < 0.8 else classes[int(rng.integers(len(classes)))])
        for _ in range(int(rng.integers(0, 5))):  # clutter
            xy1 = rng.uniform(0, 200, 2)
            dets.append(np.r_[xy1, xy1 + rng.uniform(5, 60, 2)])
            dl.append(classes[int(rng.integers(len(classes)))])
        db = np.asarray(dets, float).reshape(-1, 4)
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        out.append(ImageBoxes.of(gt, gl, db, rng.random(len(db)), dl))
    return out


def _pycocotools(images: list[ImageBoxes], classes: list[str], use_cats: bool) -> np.ndarray:
    cat_id = {c: i + 1 for i, c in enumerate(classes)}
    anns: list[dict[str, object]] = []
    results: list[dict[str, object]] = []
    for i, im in enumerate(images):
        for box, label in zip(im.gt_boxes, im.gt_labels, strict=True):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat_id[label], "iscrowd": 0,
                         "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h})
        for box, score, det_label in zip(im.det_boxes, im.det_scores, im.det_labels, strict=True):
            assert det_label is not None
            results.append({"image_id": i + 1, "category_id": cat_id[det_label], "score": float(score),
                            "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                                     float(box[3] - box[1])]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": i + 1, "width": 400, "height": 400} for i in range(len(images))],
                      "annotations": anns, "categories": [{"id": v, "name": k} for k, v in cat_id.items()]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.params.useCats = int(use_cats)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("class_aware", [False, True])
def test_coco_matches_pycocotools(seed: int, class_aware: bool) -> None:
    rng = np.random.default_rng(100 + seed)
    classes = ["gun", "knife", "laptop"]
    images = _random_images(rng, int(rng.integers(3, 25)), classes)
    stats = _pycocotools(images, classes, class_aware)
    ours = coco_box_metrics(images, class_aware)
    assert ours.map == pytest.approx(stats[0], abs=1e-9)
    assert ours.map50 == pytest.approx(stats[1], abs=1e-9)
    assert ours.map75 == pytest.approx(stats[2], abs=1e-9)
    assert ours.ar[1] == pytest.approx(stats[6], abs=1e-9)
    assert ours.ar[10] == pytest.approx(stats[7], abs=1e-9)
    assert ours.ar[100] == pytest.approx(stats[8], abs=1e-9)


def test_coco_without_ground_truth_is_none() -> None:
    m = coco_box_metrics([ImageBoxes.of(np.zeros((0, 4)), [], [[0, 0, 5, 5]], [0.4])], class_aware=True)
    assert m.map is None and m.categories == 0
