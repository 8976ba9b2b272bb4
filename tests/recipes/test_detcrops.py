"""Detector crops for training (``export.recipes.detcrops``): the runtime's own boxes and inputs, labelled from
the ground truth (fresh virtual-scanner items; indices from 5,000,000 on are in no training set)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge.condition.composer import compose
from edge.config.models import ModelsConfig
from edge.records import ItemMeta
from edge.screening import ModelHolder, load_models
from edge.stages.condition import ConditionedItem
from edge.stages.detect import Detection, DetectStage
from export.recipes import scorer as sc
from export.recipes.detcrops import generate, label_detections
from export.recipes.simdata import SimRig, iter_items, load_crops, object_boxes

from .conftest import FRESH_FIRST, REPO

DETECTOR = REPO / "models" / "detector-agnostic"


def test_labels_follow_the_ground_truth(fresh_items: list) -> None:
    truth = next(t for _, t in fresh_items
                 if any(o.threat for o in object_boxes(t)) and any(not o.threat and not o.tainted
                                                                   for o in object_boxes(t)))
    objs = object_boxes(truth)
    threat = next(o for o in objs if o.threat)
    clean = next(o for o in objs if not o.threat and not o.tainted)
    x1, y1, x2, y2 = threat.xyxy
    w = x2 - x1
    boxes = np.asarray([threat.xyxy,                       # the threat itself
                        clean.xyxy,                        # a benign object nowhere near a threat
                        (x1, y1, x1 + 0.3 * w, y2),        # a sliver of the threat: shows too little of it
                        (x1 - w, y1, x2, y2)], np.float64)  # the threat with as much again beside it
    labels = label_detections(boxes, truth)
    assert list(labels["threat"]) == [True, False, False, True]
    assert list(labels["tainted"]) == [False, clean.tainted, True, False]
    assert labels["kind"][0] == threat.kind and labels["kind"][1] == clean.kind
    assert labels["kind"][2] == ""  # IoU 0.3 with the threat: no kind
    np.testing.assert_allclose(np.asarray(labels["iou"][:3], np.float64), np.array([1.0, 1.0, 0.3]), atol=0.02)


def test_cached_crops_are_what_the_score_stage_composes(tmp_path: Path) -> None:
    out = tmp_path / "dc"
    generate(out, 2, FRESH_FIRST, 1.0, DETECTOR, shard_size=2, workers=1)
    cached = load_crops(out)
    assert set(cached.item.tolist()) <= {FRESH_FIRST, FRESH_FIRST + 1} and cached.threat.any()
    # The same items through the runtime's stages: same boxes, and the scorer's input equals the cache's.
    models = load_models(ModelsConfig(detector=DETECTOR, backend="onnxruntime", threads=1, allow_unsigned=True))
    try:
        detect = DetectStage(ModelHolder(models), 32)
        expected = []
        detections: list[Detection] = []
        for image, _ in iter_items(SimRig(), 2, FRESH_FIRST, threat_rate=1.0):
            meta = ItemMeta("x", "sim", 0, 0.0, 0.0, 0.0, 0.0, time.monotonic() + 60)
            found = detect(ConditionedItem(meta, image))
            expected.append(compose(image, sc.contract(), [d.box for d in found.detections]))
            detections.extend(found.detections)
    finally:
        models.close()
    # each crop's detection score and box are the detect stage's (for studies of score and box quality)
    with np.load(out / "crops_0000.npz") as shard:
        np.testing.assert_allclose(shard["det_score"], [d.score for d in detections], rtol=1e-6)
        np.testing.assert_allclose(shard["box"], [(d.box.x1, d.box.y1, d.box.x2, d.box.y2) for d in detections],
                                   rtol=1e-5)
    want = np.concatenate(expected)
    got = sc.crop_inputs(cached)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=0.01)  # float16 cache
    # Resumable: an existing shard is kept as it is.
    before = (out / "crops_0000.npz").stat().st_mtime_ns
    generate(out, 2, FRESH_FIRST, 1.0, DETECTOR, shard_size=2, workers=1)
    assert (out / "crops_0000.npz").stat().st_mtime_ns == before
