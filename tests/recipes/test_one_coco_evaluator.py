"""One COCO evaluator: the training recipes' figures (``export.recipes.evaluate``) now come from
``edge_tools.eval.metrics`` and equal what pycocotools gave them before (its evaluation as the recipes called it,
kept here verbatim as the reference): class-agnostic and per class, whole sets and subsets whose other objects are
ignored, duplicates, misses, empty images, classes without ground truth."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from export.recipes.evaluate import coco_class_metrics, coco_metrics, overlap_band

F32 = NDArray[np.float32]
_IGNORED_AREA = 1e12


def _pycocotools(gts: Sequence[NDArray[np.floating]], gt_labels: Sequence[NDArray[np.int64]],
                 dets: Sequence[tuple[F32, F32, NDArray[np.int64]]], classes: Sequence[str],
                 subset: Sequence[NDArray[np.bool_]] | None) -> Any:
    """``export.recipes.evaluate._coco_eval`` before the evaluators were one (3a95147), verbatim."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    results: list[dict[str, object]] = []
    for i, (g, gl, (db, ds, dl)) in enumerate(zip(gts, gt_labels, dets, strict=True)):
        images.append({"id": i, "width": 10_000, "height": 10_000})
        keep = subset[i] if subset is not None else np.ones(len(g), bool)
        for b, c, k in zip(np.asarray(g), gl, keep, strict=True):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(c) + 1, "iscrowd": 0,
                                "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h if k else _IGNORED_AREA})
        for b, sc, c in zip(db, ds, dl, strict=True):
            results.append({"image_id": i, "category_id": int(c) + 1, "score": float(sc),
                            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    if not results:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations,
                        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.params.maxDets = [100]
        ev.params.areaRng = [[0.0, _IGNORED_AREA / 10]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
        ev.accumulate()
    return ev


def _mean_valid(v: NDArray[np.float64]) -> float:
    v = v[v > -1]
    return float(v.mean()) if v.size else float("nan")


Dets = list[tuple[F32, F32, NDArray[np.int64]]]


def _data(seed: int, n_classes: int) -> tuple[list[F32], list[NDArray[np.int64]], Dets]:
    rng = np.random.default_rng(seed)
    gts, labels, dets = [], [], []
    for _ in range(int(rng.integers(1, 9))):
        n = int(rng.integers(0, 9))
        xy = rng.uniform(0, 300, (n, 2))
        g = np.c_[xy, xy + rng.uniform(15, 120, (n, 2))].astype(np.float32)
        gl = rng.integers(0, n_classes, n).astype(np.int64)
        k = int(rng.integers(0, n + 1))
        extra = int(rng.integers(0, 6))
        exy = rng.uniform(0, 300, (extra, 2))
        # loose (now and then inverted), spurious, duplicates
        d = np.r_[g[:k] + rng.normal(0, 7, (k, 4)), np.c_[exy, exy + rng.uniform(10, 90, (extra, 2))],
                  g[: k // 2] + rng.normal(0, 3, (k // 2, 4))].astype(np.float32)
        dl = np.r_[gl[:k], rng.integers(0, n_classes, extra), gl[: k // 2]].astype(np.int64)
        dl = np.where(rng.uniform(size=len(dl)) < 0.15, rng.integers(0, n_classes, len(dl)), dl)  # some mislabelled
        s = rng.uniform(0.05, 1.0, len(d)).astype(np.float32)
        s[rng.uniform(size=len(s)) < 0.2] = 0.5  # score ties
        gts.append(g)
        labels.append(gl)
        dets.append((d, s, dl))
    return gts, labels, dets


@pytest.mark.parametrize("seed", range(30))
def test_class_agnostic_figures_are_the_pycocotools_ones(seed: int) -> None:
    gts, _, dets3 = _data(seed, 1)
    dets = [(b, s) for b, s, _ in dets3]
    zeros = [np.zeros(len(g), np.int64) for g in gts]
    for subset in (None, [overlap_band(g, "under 0.1") for g in gts], [overlap_band(g, "0.1-0.5") for g in gts]):
        m = coco_metrics(gts, dets, subset)
        ev = _pycocotools(gts, zeros, [(b, s, np.zeros(len(s), np.int64)) for b, s in dets], ("object",), subset)
        if ev is None or not m["objects"]:
            assert m["mAP"] == m["AR100"] == 0.0
            continue
        prec, rec = ev.eval["precision"][:, :, 0, 0, 0], ev.eval["recall"][:, 0, 0, 0]
        expected = {"mAP": _mean_valid(prec), "mAP50": _mean_valid(prec[0]), "mAP75": _mean_valid(prec[5]),
                    "AR100": _mean_valid(rec), "recall50@100": _mean_valid(rec[:1])}
        for key, value in expected.items():
            assert m[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("seed", range(30))
def test_per_class_figures_are_the_pycocotools_ones(seed: int) -> None:
    classes = ("gun", "knife", "blade", "part")
    gts, labels, dets = _data(100 + seed, len(classes) - 1)  # "part" never has ground truth
    for subset in (None, [overlap_band(g, "0.1-0.5") | overlap_band(g, "0.5 up") for g in gts]):
        m = coco_class_metrics(gts, labels, dets, classes, subset)
        ev = _pycocotools(gts, labels, dets, classes, subset)
        if ev is None:
            assert m["AP_per_class"] == {} and m["mAP"] == 0.0
            continue
        prec = ev.eval["precision"][:, :, :, 0, 0]
        counted = m["objects_per_class"]
        present = [k for k in range(len(classes)) if counted[classes[k]] > 0]
        assert set(m["AP_per_class"]) == {classes[k] for k in present}
        for k in present:
            assert m["AP_per_class"][classes[k]] == pytest.approx(_mean_valid(prec[:, :, k]), abs=1e-12)
        if present:
            assert m["mAP"] == pytest.approx(np.mean([_mean_valid(prec[:, :, k]) for k in present]), abs=1e-12)
            assert m["mAP50"] == pytest.approx(np.mean([_mean_valid(prec[0, :, k]) for k in present]), abs=1e-12)
            assert m["mAP75"] == pytest.approx(np.mean([_mean_valid(prec[5, :, k]) for k in present]), abs=1e-12)
