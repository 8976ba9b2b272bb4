"""Class-agnostic COCO figures of `eval-detector` (export.recipes.evaluate): the whole set against pycocotools'
own summary, and the overlap subsets (objects ignored as COCO ignores objects outside an area range)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from export.recipes.evaluate import OVERLAP_BANDS, coco_metrics, overlap_band


def _summarised(gts: list[np.ndarray], dets: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """pycocotools' summarize() stats for the same data (the standard path, 1/10/100 detections)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    anns, res = [], []
    for i, (g, (db, ds)) in enumerate(zip(gts, dets, strict=True)):
        for b in g:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "iscrowd": 0,
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                         "area": float((b[2] - b[0]) * (b[3] - b[1]))})
        for b, s in zip(db, ds, strict=True):
            res.append({"image_id": i, "category_id": 1, "score": float(s),
                        "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": i} for i in range(len(gts))], "annotations": anns,
                        "categories": [{"id": 1, "name": "object"}]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(res), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def test_whole_set_figures_are_pycocotools_summary() -> None:
    rng = np.random.default_rng(5)
    gts, dets = [], []
    for _ in range(6):
        xy = rng.uniform(0, 200, (5, 2))
        g = np.c_[xy, xy + rng.uniform(20, 90, (5, 2))].astype(np.float32)
        jitter = rng.normal(0, 6, (9, 4)).astype(np.float32)
        d = np.r_[g, g[:4]] + jitter  # loose boxes and duplicates, as the detector gives
        gts.append(g)
        dets.append((d, rng.uniform(0.1, 1.0, 9).astype(np.float32)))
    m = coco_metrics(gts, dets)
    stats = _summarised(gts, dets)
    assert 0.1 < m["AR100"] < 0.95  # neither trivial end
    assert m["mAP"] == pytest.approx(stats[0], abs=1e-9) and m["mAP50"] == pytest.approx(stats[1], abs=1e-9)
    assert m["mAP75"] == pytest.approx(stats[2], abs=1e-9) and m["AR100"] == pytest.approx(stats[8], abs=1e-9)
    assert m["objects"] == 30


def test_a_subset_ignores_the_other_objects_and_what_matches_them() -> None:
    g = [np.array([[0, 0, 10, 10], [100, 100, 140, 140], [105, 100, 145, 140]], np.float32)]
    found_first = [(g[0][:1], np.array([0.9], np.float32))]
    assert coco_metrics(g, found_first)["AR100"] == pytest.approx(1 / 3)
    loose = [(np.array([[0, 0, 10, 14]], np.float32), np.array([0.9], np.float32))]  # IoU 100/140 = 0.71
    assert coco_metrics(g, loose)["recall50@100"] == pytest.approx(1 / 3)
    assert coco_metrics(g, loose)["AR100"] == pytest.approx(1 / 3 * 5 / 10)  # found at IoU 0.5..0.7 only
    alone = [overlap_band(b, "under 0.1") for b in g]
    assert alone[0].tolist() == [True, False, False]
    assert overlap_band(g[0], "0.5 up").tolist() == [False, True, True]  # IoU 35/45 = 0.78
    assert not overlap_band(g[0], "0.1-0.5").any()
    m = coco_metrics(g, found_first, alone)
    assert m["objects"] == 1 and m["AR100"] == pytest.approx(1.0) and m["mAP"] == pytest.approx(1.0)
    # the heavy pair: one found, one missed → AR 0.5, and the detection on the ignored lone box does not count
    every = [(g[0][:2], np.array([0.9, 0.8], np.float32))]
    h = coco_metrics(g, every, [overlap_band(b, "0.5 up") for b in g])
    assert h["objects"] == 2 and h["AR100"] == pytest.approx(0.5)
    assert coco_metrics(g, every, [np.zeros(3, bool)])["objects"] == 0


def test_overlap_bands_split_every_object_once() -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (40, 2))
    known = np.array([[500, 500, 520, 520],                          # alone
                      [600, 600, 640, 640], [630, 600, 670, 640],    # IoU 10/70 = 0.14
                      [800, 800, 840, 840], [802, 800, 842, 840]])   # IoU 38/42 = 0.90
    boxes = np.r_[np.c_[xy, xy + rng.uniform(5, 40, (40, 2))], known]
    masks = np.stack([overlap_band(boxes, b) for b in OVERLAP_BANDS])
    assert (masks.sum(axis=0) == 1).all()  # every object in exactly one band
    assert masks[:, 40:].T.tolist() == [[True, False, False], [False, True, False], [False, True, False],
                                        [False, False, True], [False, False, True]]
    assert overlap_band(np.zeros((0, 4)), "0.5 up").shape == (0,)
