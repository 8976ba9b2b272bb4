"""Class-aware detector (issue 6): class mapping, assignment with classes, focal loss, init from the agnostic
bundle, a few resumable training steps, per-class COCO metrics, and the shipped bundle in the runtime's detect
stage on fresh virtual-scanner items."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from edge.backends import open_backend
from edge.boxes import box_iou
from edge.bundles import load_bundle
from edge.bundles.writer import rewrite_manifest
from edge.errors import BackendError
from edge.records import ItemMeta, RawItem
from edge.screening import LoadedModel, ModelHolder, ModelSet
from edge.stages.condition import ConditionedItem, ConditionStage
from edge.stages.detect import Detection, DetectStage
from export.recipes import detector as det
from export.recipes import detector_classes as dc
from export.recipes.cli import app
from export.recipes.evaluate import coco_class_metrics, postprocess_labelled
from export.recipes.simdata import PRESETS, RIG_SEED, SimRig, generate
from sim.objects import BENIGN
from sim.scene import SceneConfig, build_item
from sim.threats import THREATS

from .conftest import FRESH_FIRST, REPO

AGNOSTIC = REPO / "models" / "detector-agnostic"
CLASSAWARE = REPO / "models" / "detector-classes"


def test_every_class_has_sim_kinds_and_every_mapped_kind_exists() -> None:
    kinds = set(BENIGN) | set(THREATS)
    assert set(dc.KIND_TO_CLASS) <= kinds
    assert set(dc.KIND_TO_CLASS.values()) == set(dc.CLASSES)
    assert dc.CLASSES[:6] == ("bottle", "hairdryer", "iron", "toaster", "mobile", "laptop")  # seed 001's order
    labels = dc.class_index(np.asarray(["phone", "dagger", "clothing", "jar"]))
    assert labels.tolist() == [4, 6, -1, 7]


def test_assignment_carries_the_class_of_the_matched_box() -> None:
    size = 128
    model = dc.ClassDetector(3, 8, 16)
    *_, centres = model.raw_classes(torch.zeros(1, 3, size, size))
    gt = torch.tensor([[10.0, 20.0, 50.0, 60.0], [60.0, 60.0, 120.0, 124.0]])
    labels = torch.tensor([2, 5])
    idx, _, cls = dc.assign_classes(centres, det.level_of_locations(size), gt, labels, size)
    pos = idx >= 0
    assert set(cls[pos].tolist()) == {2, 5}
    assert torch.equal(cls[pos], labels[idx[pos]])
    assert torch.all(cls[~pos] == -1)
    idx0, _, cls0 = dc.assign_classes(centres, det.level_of_locations(size), torch.zeros(0, 4),
                                      torch.zeros(0, dtype=torch.long), size)
    assert torch.all(idx0 == -1) and torch.all(cls0 == -1)


def test_focal_loss_matches_the_formula() -> None:
    logits = torch.tensor([[2.0, -1.0]])
    targets = torch.tensor([[1.0, 0.0]])
    p1, p2 = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))
    expected = 0.25 * (1 - p1) ** 2 * -math.log(p1) + 0.75 * p2**2 * -math.log(1 - p2)
    assert dc.focal_loss(logits, targets).item() == pytest.approx(expected, rel=1e-5)


def test_init_from_the_agnostic_bundle_keeps_its_boxes_and_quality() -> None:
    """The rebuilt agnostic weights give the class-aware model the shipped detector's boxes and objectness."""
    bundle = load_bundle(AGNOSTIC)
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 320, 320)).astype(np.float32)
    session = open_backend(bundle, "onnxruntime", "fp32")
    ref = session.predict(x)
    session.close()
    agnostic = dc.agnostic_from_bundle(AGNOSTIC)
    model = dc.ClassDetector(3, *dc.size_of(agnostic), context=det.has_context(agnostic))
    dc.init_from(model, agnostic)
    with pytest.raises(ValueError, match="width/fpn"):  # a model of another size is refused, not half-copied
        dc.init_from(dc.ClassDetector(3, 8, 16, context=det.has_context(agnostic)), agnostic)
    if det.has_context(agnostic):  # nor one that would drop the context block
        with pytest.raises(ValueError, match="ctx"):
            dc.init_from(dc.ClassDetector(3, *dc.size_of(agnostic)), agnostic)
    model.eval()
    with torch.inference_mode():
        _, ctr, iou, _, _ = model.raw_classes(torch.from_numpy(x))
        boxes, _, labels = model(torch.from_numpy(x))
    quality = torch.sqrt(torch.sigmoid(ctr) * torch.sigmoid(iou)).numpy()
    np.testing.assert_allclose(boxes.numpy(), ref.boxes, atol=0.05)  # type: ignore[union-attr]
    np.testing.assert_allclose(quality, ref.scores, atol=1e-3)  # type: ignore[union-attr]
    assert labels.dtype == torch.int64 and int(labels.max()) < len(dc.CLASSES)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cls-cache")
    generate(out, 2, first_item=6_100_000, threat_rate=1.0, shard_size=2, workers=1, progress=lambda _m: None)
    return out


def test_a_few_steps_train_and_resume(cache: Path, tmp_path: Path) -> None:
    ds = dc.load_class_det(cache)
    assert len(ds.images) == 2
    assert any((lab >= 0).any() for lab in ds.labels), "no labelled object in the tiny cache"
    ckpt = tmp_path / "cls.pt"
    cfg = dc.ClassTrainConfig(steps=4, batch=2, width=8, fpn=16, size=128, checkpoint_every=10)
    first = dc.train(ds, ckpt, cfg, progress=lambda _m: None, until=2)
    w2 = first.cls.weight.detach().clone()
    assert torch.load(ckpt, weights_only=False)["step"] == 2
    msgs: list[str] = []
    resumed = dc.train(ds, ckpt, cfg, progress=msgs.append)
    assert any("resumed" in m and "step 2" in m for m in msgs)
    assert torch.load(ckpt, weights_only=False)["step"] == 4
    assert not torch.equal(w2, resumed.cls.weight), "the class head did not learn after resuming"
    with torch.inference_mode():
        boxes, scores, labels = resumed(torch.zeros(1, 3, 128, 128))
    assert boxes.shape == (1, 336, 4) and scores.shape == labels.shape == (1, 336)
    assert float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0


def test_eval_of_a_shipped_bundle_runs_its_onnx_with_its_voting(cache: Path) -> None:
    result = CliRunner().invoke(app, ["eval-detector-classes", "--bundle", str(CLASSAWARE), "--data", str(cache)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    manifest = load_bundle(CLASSAWARE, verify_hashes=False).manifest
    vote = float(manifest.thresholds["vote_iou"])
    assert out["bundle"] == f"detector-classes@{manifest.version}" and out["vote_iou"] == vote
    # The same figures from the bundle's ONNX run here directly, with the bundle's voting.
    ds = dc.load_class_det(cache)
    onnx = next(m for m in manifest.models if m.format == "onnx")
    session = ort.InferenceSession(str(CLASSAWARE / onnx.path), providers=["CPUExecutionProvider"])
    x = np.stack([det.plain(im, "pc", 320) for im in ds.images])
    boxes, scores, labels = session.run(["boxes", "scores", "labels"], {"input": x})
    dets = [postprocess_labelled(boxes[k], scores[k], labels[k], 0.01, 0.5, 100, vote) for k in range(len(x))]
    gts, gls = zip(*[ds.labelled(i) for i in range(len(ds.images))], strict=True)
    expected = coco_class_metrics([g * 320 / ds.images.shape[-1] for g in gts], gls, dets, dc.CLASSES)
    assert out["all"]["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert out["all"]["mAP50"] == pytest.approx(expected["mAP50"], abs=1e-6)
    agnostic = CliRunner().invoke(app, ["eval-detector-classes", "--bundle", str(AGNOSTIC), "--data", str(cache)])
    assert agnostic.exit_code != 0
    assert "not a class-aware detector (no classes)" in " ".join(agnostic.output.replace("│", " ").split())


def test_training_from_a_bundle_takes_its_size(cache: Path, tmp_path: Path) -> None:
    ds = dc.load_class_det(cache)
    ckpt = tmp_path / "cls.pt"
    cfg = dc.ClassTrainConfig(steps=3, batch=1, size=128, init=str(AGNOSTIC))  # default size 16/32
    dc.train(ds, ckpt, cfg, progress=lambda _m: None, until=1)
    # the same command resumes: the checkpoint's network (the bundle's size), not the config's 16/32 default
    model = dc.train(ds, ckpt, cfg, progress=lambda _m: None)
    size = dc.size_of(dc.agnostic_from_bundle(AGNOSTIC))
    saved = torch.load(ckpt, weights_only=False)
    assert saved["step"] == 3
    assert dc.size_of(model) == size == (saved["config"].width, saved["config"].fpn)
    assert saved["config"].context == det.has_context(dc.agnostic_from_bundle(AGNOSTIC))
    assert dc.size_of(dc.build(ckpt, 3, saved["config"].width, saved["config"].fpn, saved["config"].context)) == size


def test_continuing_from_a_checkpoint_takes_its_size_and_every_tensor(cache: Path, tmp_path: Path) -> None:
    """Stage b starts from stage a's checkpoint: it must build a's network (not the default 16/32, which would
    copy only the tensors whose shapes happen to match) and refuse a checkpoint that does not fit."""
    ds = dc.load_class_det(cache)
    first = tmp_path / "a.pt"
    dc.train(ds, first, dc.ClassTrainConfig(steps=2, batch=1, width=8, fpn=16, size=128), progress=lambda _m: None)
    msgs: list[str] = []
    second = dc.train(ds, tmp_path / "b.pt", dc.ClassTrainConfig(steps=2, batch=1, size=128, init=str(first)),
                      progress=msgs.append)
    n = len(second.state_dict())
    assert dc.size_of(second) == (8, 16) and f"initialised {n}/{n} tensors from checkpoint" in " ".join(msgs)
    assert (torch.load(tmp_path / "b.pt", weights_only=False)["config"].width,) == (8,)
    with pytest.raises(ValueError, match="another size"):
        dc._initialise(dc.ClassDetector(3, 16, 32), str(first), lambda _m: None)


def test_class_metrics_by_hand() -> None:
    g = [np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)]
    gl = [np.array([0, 1])]
    perfect = [(g[0], np.array([0.9, 0.8], np.float32), np.array([0, 1]))]
    m = coco_class_metrics(g, gl, perfect, ("a", "b"))
    assert m["mAP"] == pytest.approx(1.0) and m["mAP50"] == pytest.approx(1.0)
    swapped = [(g[0], np.array([0.9, 0.8], np.float32), np.array([1, 0]))]
    assert coco_class_metrics(g, gl, swapped, ("a", "b"))["mAP50"] == pytest.approx(0.0)
    # subset = only the class-b object: the class-a detection matches an ignored object and does not count,
    # an extra unmatched class-b detection ranked first halves class b's precision at full recall.
    extra = [(np.array([[0, 0, 10, 10], [20, 20, 40, 40], [60, 60, 70, 70]], np.float32),
              np.array([0.9, 0.8, 0.95], np.float32), np.array([0, 1, 1]))]
    sub = coco_class_metrics(g, gl, extra, ("a", "b"), subset=[np.array([False, True])])
    assert sub["objects"] == 1 and set(sub["AP_per_class"]) == {"b"}
    assert sub["mAP50"] == pytest.approx(0.5, abs=0.01)


@pytest.fixture(scope="module")
def raw_items(rig: SimRig) -> list[ConditionedItem]:
    """Four fresh items (threat rate 1) as raw counts, conditioned by the runtime's condition stage."""
    out = []
    for i in range(FRESH_FIRST + 100, FRESH_FIRST + 104):
        rng = np.random.default_rng([RIG_SEED, i])
        truth = build_item(rng, PRESETS[i % 3], SceneConfig(threat_rate=1.0), item_index=i)
        raw = rig.scanner.render(truth.path_mm, rng)
        meta = ItemMeta(f"sim-{i}", "sim", i, 0.0, 0.0, 0.0, 0.0, 1e9)
        out.append(ConditionStage(rig.conditioner)(RawItem(meta, high=raw.high, low=raw.low)))
    return out


def _stage_run(bundle_dir: Path, item: ConditionedItem, backend: str = "openvino", precision: str = "fp32",
               classes: tuple[str, ...] | None = None) -> tuple[Detection, ...]:
    bundle = load_bundle(bundle_dir)
    session = open_backend(bundle, backend, precision, threads=1)
    if classes is not None:
        bundle = dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, classes=classes))
    try:
        return DetectStage(ModelHolder(ModelSet(LoadedModel(bundle, session, backend), None)))(item).detections
    finally:
        session.close()


@pytest.mark.parametrize(("backend", "precision"), [("openvino", "fp32"), ("onnxruntime", "fp32"),
                                                    ("openvino", "int8")])
def test_shipped_bundle_labels_objects_on_fresh_items(raw_items: list[ConditionedItem], backend: str,
                                                     precision: str, tmp_path: Path) -> None:
    bundle = load_bundle(CLASSAWARE)
    if precision not in {m.precision for m in bundle.manifest.models}:
        pytest.skip(f"{CLASSAWARE.name} ships no {precision} model")
    assert bundle.manifest.classes == dc.CLASSES
    iou = float(bundle.manifest.thresholds["nms_iou"])
    # NMS is judged on the boxes it kept, before box voting moves their edges (voted boxes may overlap a little
    # more; test_box_voting_moves_edges_only covers the vote)
    unvoted = rewrite_manifest(bundle, tmp_path / "unvoted", version="t", notes="",
                               thresholds={k: v for k, v in bundle.manifest.thresholds.items() if k != "vote_iou"})
    labelled = 0
    for item in raw_items:
        dets = _stage_run(unvoted.root, item, backend, precision)
        labelled += len(dets)
        assert all(d.label in dc.CLASSES for d in dets)
        for c in dc.CLASSES:  # per-class NMS: no two boxes of one class overlap above the bundle's IoU
            b = np.asarray([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in dets if d.label == c],
                           np.float64).reshape(-1, 4)
            m = box_iou(b, b)
            np.fill_diagonal(m, 0.0)
            assert (m <= iou + 1e-6).all()
    assert labelled > 0, "the class-aware bundle found nothing on four fresh items"


def test_agnostic_bundle_still_gives_unlabelled_boxes(raw_items: list[ConditionedItem]) -> None:
    dets = _stage_run(AGNOSTIC, raw_items[0])
    assert dets and all(d.label is None for d in dets)


def test_labels_outside_the_bundle_classes_are_a_bundle_error(raw_items: list[ConditionedItem]) -> None:
    with pytest.raises(BackendError, match="labels"):
        _stage_run(CLASSAWARE, raw_items[0], classes=("bottle",))


def test_repeat_factors_favour_items_with_rare_classes() -> None:
    labels = [np.array([0]), np.array([0, 1]), np.array([-1]), np.zeros(0, np.int64)]
    # f_0 = 2/4, f_1 = 1/4; t = 0.5 → r_0 = 1, r_1 = sqrt(2); background-only and empty items keep 1
    np.testing.assert_allclose(dc.repeat_factors(labels, 2, 0.5), [1.0, math.sqrt(2.0), 1.0, 1.0])
    np.testing.assert_allclose(dc.repeat_factors(labels, 2, 0.0), [1.0, 1.0, 1.0, 1.0])


def test_box_voting_moves_edges_only(raw_items: list[ConditionedItem], tmp_path: Path) -> None:
    """The same bundle with and without ``vote_iou``: the same boxes kept (scores, labels, order), some edges
    moved, none by more than the objects' size (a vote averages overlapping boxes, it never jumps)."""
    src = load_bundle(CLASSAWARE)
    plain = {k: v for k, v in src.manifest.thresholds.items() if k != "vote_iou"}
    off = rewrite_manifest(src, tmp_path / "off", thresholds=plain, version="t0", notes="")
    on = rewrite_manifest(src, tmp_path / "on", thresholds={**plain, "vote_iou": 0.6}, version="t1", notes="")
    moved = 0
    for item in raw_items:
        a, b = _stage_run(off.root, item), _stage_run(on.root, item)
        assert [(d.score, d.label) for d in a] == [(d.score, d.label) for d in b]
        for da, db in zip(a, b, strict=True):
            xa = np.array([da.box.x1, da.box.y1, da.box.x2, da.box.y2])
            xb = np.array([db.box.x1, db.box.y1, db.box.x2, db.box.y2])
            size = max(xa[2] - xa[0], xa[3] - xa[1])
            assert np.abs(xa - xb).max() < 0.5 * size
            moved += int(np.abs(xa - xb).max() > 0.5)
    assert moved > 0
