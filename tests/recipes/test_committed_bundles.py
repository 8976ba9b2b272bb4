"""The committed reference bundles load (hashes verified) and work on freshly simulated items, runtime-style.

Inputs are composed by ``edge.condition.composer`` from items conditioned by the runtime's ``Conditioner``;
models run through the runtime's backends (OpenVINO and ONNX Runtime). The items are new to the models
(indices never used in training, validation or test).
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.backends import open_backend
from edge.bundles import load_bundle
from edge.bundles.outputs import ClassifierOutputs, DetectorOutputs, ScorerOutputs, item_threshold_detector
from edge.condition.composer import compose, geometry
from edge_tools.eval.metrics import auroc
from export.recipes.evaluate import postprocess, recall_at
from export.recipes.simdata import CROP_MARGIN, expand, object_boxes

from .conftest import REPO

CLASSIFIER = REPO / "models" / "classifier-threat"


def _detect(session: object, contract: object, image: object, threshold: float, iou: float) -> np.ndarray:
    x = compose(image, contract)  # type: ignore[arg-type]
    out = session.predict(x)  # type: ignore[attr-defined]
    assert isinstance(out, DetectorOutputs)
    b, _ = postprocess(out.boxes[0], out.scores[0], threshold, iou, 32)
    h, w = image.shape  # type: ignore[attr-defined]
    g = geometry((0, 0, w, h), contract)  # type: ignore[arg-type]
    return np.stack([(b[:, 0] - g.pad_x) / g.scale_x, (b[:, 1] - g.pad_y) / g.scale_y,
                     (b[:, 2] - g.pad_x) / g.scale_x, (b[:, 3] - g.pad_y) / g.scale_y], 1)


@pytest.mark.parametrize(("name", "backend", "precision"), [("detector-agnostic", "openvino", "fp32"),
                                                            ("detector-agnostic", "onnxruntime", "fp32"),
                                                            ("detector-agnostic", "openvino", "int8"),
                                                            ("detector-agnostic-h", "openvino", "fp32")])
def test_detector_finds_most_objects_on_fresh_items(fresh_items: list, name: str, backend: str,
                                                    precision: str) -> None:
    bundle = load_bundle(REPO / "models" / name)
    session = open_backend(bundle, backend, precision)
    thr = float(bundle.manifest.thresholds["score"])
    iou = float(bundle.manifest.thresholds.get("nms_iou", 0.5))
    gts, dets = [], []
    for image, truth in fresh_items:
        gts.append(np.asarray([o.xyxy for o in object_boxes(truth)]))
        dets.append(_detect(session, bundle.contract, image, thr, iou))
    session.close()
    recall = recall_at(gts, dets, 0.5)
    n_det = sum(len(d) for d in dets)
    n_gt = sum(len(g) for g in gts)
    assert recall >= 0.5, f"{backend}/{precision}: recall@0.5 {recall:.2f} on {n_gt} objects"
    assert n_det <= 4 * n_gt, f"{n_det} detections for {n_gt} objects: the threshold lets clutter through"


@pytest.mark.parametrize("name", ["scorer-stfpm", "scorer-stfpm-pc", "scorer-padim"])
def test_scorer_ranks_threats_above_benign_objects(ranking_items: list, name: str) -> None:
    bundle = load_bundle(REPO / "models" / name)
    session = open_backend(bundle, "openvino", "fp32")
    thr = float(bundle.manifest.thresholds["score"])
    scores: list[float] = []
    threat: list[bool] = []
    map_max: list[float] = []
    map_16th: list[float] = []
    for image, truth in ranking_items:
        h, w = image.shape
        objs = [o for o in object_boxes(truth) if not o.tainted]
        boxes = np.asarray([expand(o.xyxy, CROP_MARGIN, h, w) for o in objs])
        out = session.predict(compose(image, bundle.contract, boxes))
        assert isinstance(out, ScorerOutputs)
        scores.extend(out.score.tolist())
        flat = np.sort(out.anomaly_map.reshape(len(objs), -1), axis=1)
        map_max.extend(flat[:, -1].tolist())
        map_16th.extend(flat[:, -16].tolist())
        threat.extend(o.threat for o in objs)
    session.close()
    s, t = np.asarray(scores), np.asarray(threat)
    assert t.any() and (~t).any()
    # Rank-based (the normalisation is monotone; a mean would depend on its shape). PaDiM v1.x is near chance
    # per object (AUROC 0.60 on sim-test, 0.51 on these 28 threats): its value is the on-site refit (tests/fit),
    # so only the student-teacher bundle is held to a ranking here.
    # The pc twin ranks these objects less well (0.62 when it was committed; docs/models.md, "Input hlz against
    # pc"): its floor is lower, still well above chance.
    if name.startswith("scorer-stfpm"):
        value = auroc(s, t)
        floor = 0.6 if name.endswith("-pc") else 0.7
        assert value is not None and value > floor, "threat objects do not score higher than benign ones"
    assert (s[~t] >= thr).mean() <= 0.3, "more than 30% of benign objects flagged"
    # the map and the score share one scale (a monotone normalisation of the raw map): the score is the map's
    # maximum (PaDiM) or the mean of its 16 largest pixels (STFPM v2), so it lies between the 16th largest pixel
    # and the largest, and localising at the threshold finds pixels whenever the object alarms
    mx, m16 = np.asarray(map_max), np.asarray(map_16th)
    assert np.all(s <= mx + 1e-4) and np.all(s >= m16 - 1e-4)
    assert np.all(mx[s >= thr] >= thr)


def test_classifier_separates_threat_crops(fresh_items: list) -> None:
    bundle = load_bundle(CLASSIFIER)
    assert bundle.manifest.classes == ("benign", "anomaly")
    session = open_backend(bundle, "onnxruntime", "fp32")
    probs: list[float] = []
    threat: list[bool] = []
    for image, truth in fresh_items:
        h, w = image.shape
        objs = [o for o in object_boxes(truth) if not o.tainted]
        out = session.predict(compose(image, bundle.contract, np.asarray([expand(o.xyxy, CROP_MARGIN, h, w)
                                                                          for o in objs])))
        assert isinstance(out, ClassifierOutputs)
        np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, atol=1e-5)
        probs.extend(out.probs[:, 1].tolist())
        threat.extend(o.threat for o in objs)
    session.close()
    p, t = np.asarray(probs), np.asarray(threat)
    assert p[t].mean() > p[~t].mean() + 0.2, "threat crops are not clearly more 'anomaly' than benign ones"


@pytest.mark.parametrize("name", ["scorer-stfpm", "scorer-stfpm-pc", "scorer-padim", "classifier-threat"])
def test_item_thresholds_belong_to_the_shipped_detector(name: str) -> None:
    """A committed scorer's item operating point was measured through the committed detector (re-measure with
    `edge eval --write-item-threshold` after changing either)."""
    scorer = load_bundle(REPO / "models" / name).manifest
    detector = load_bundle(REPO / "models" / "detector-agnostic").manifest
    assert scorer.thresholds["item"] >= scorer.thresholds["score"]
    assert item_threshold_detector(scorer.notes) == f"{detector.name}@{detector.version}"
