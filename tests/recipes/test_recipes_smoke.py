"""Fast smoke tests of the recipes: cache shards, target assignment, augmentation, a few training steps, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edge.bundles import load_bundle
from edge.bundles.manifest import NormalisationKind, ScoreNormalisation
from edge.bundles.outputs import Role
from export.recipes import detector as det
from export.recipes import scorer as sc
from export.recipes.cli import app
from export.recipes.simdata import generate, load_crops, load_det


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cache")
    generate(out, 3, first_item=6_000_000, threat_rate=1.0, shard_size=3, workers=1, progress=lambda _m: None)
    return out


def test_cache_boxes_cover_material(cache: Path) -> None:
    ds = load_det(cache)
    assert len(ds.images) == 3
    assert all(len(b) > 0 for b in ds.boxes)
    for img, boxes in zip(ds.images, ds.boxes, strict=True):
        h = img[3].astype(np.float32) / 255.0  # T_high: 1 = air
        for x1, y1, x2, y2 in boxes.astype(int):
            inside = h[max(y1, 0):y2 + 1, max(x1, 0):x2 + 1]
            assert inside.min() < 0.97, "a ground-truth box over nothing but air"
    crops = load_crops(cache)
    assert crops.crops.shape[1:] == (6, 64, 64)
    assert crops.threat.any() and (~crops.threat).any()
    assert len(crops.crops) == sum(len(b) for b in ds.boxes)


def test_resumable_cache_keeps_shards(cache: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in cache.glob("*.npz")}
    generate(cache, 3, first_item=6_000_000, shard_size=3, workers=1, progress=lambda _m: None)
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.npz")} == before


def test_assignment_puts_positives_inside_their_box() -> None:
    size = 128
    model = det.AgnosticDetector(3, 8, 16)
    _, _, _, centres = model.raw(torch.zeros(1, 3, size, size))
    gt = torch.tensor([[10.0, 20.0, 50.0, 60.0], [60.0, 60.0, 120.0, 124.0]])
    idx, target = det.assign(centres, det.level_of_locations(size), gt, size)
    pos = idx >= 0
    assert pos.sum() > 0
    assert set(idx[pos].tolist()) == {0, 1}
    c = centres[pos]
    g = gt[idx[pos]]
    assert torch.all((c[:, 0] > g[:, 0]) & (c[:, 0] < g[:, 2]) & (c[:, 1] > g[:, 1]) & (c[:, 1] < g[:, 3]))
    assert torch.allclose(c[:, 0] - target[pos][:, 0], g[:, 0])


def test_augment_keeps_boxes_on_the_image(cache: Path) -> None:
    ds = load_det(cache)
    rng = np.random.default_rng(0)
    for _ in range(10):
        x, b = det.augment(ds.images[0], ds.boxes[0], rng, "pc", 96)
        assert x.shape == (3, 96, 96)
        assert torch.isfinite(x).all()
        if len(b):
            assert float(b.min()) >= 0 and float(b.max()) <= 96
            assert torch.all(b[:, 2] > b[:, 0]) and torch.all(b[:, 3] > b[:, 1])


def test_stretched_boxes_follow_their_object() -> None:
    """Scale and stretch move the box exactly as they move the pixels (a wrong axis would show at once)."""
    img = np.full((4, 128, 128), 255, np.uint8)
    img[:, 30:50, 20:100] = 0  # a dark bar 80 wide, 20 high
    box = np.array([[20, 30, 100, 50]], np.float32)
    rng = np.random.default_rng(5)
    stretched = 0
    for _ in range(20):
        x, b = det.augment(img, box, rng, "pc", 128, det.Geometry(0.5, 2.0, aspect=1.6))
        if len(b) != 1:
            continue
        shown = x.numpy().transpose(1, 2, 0) * det.PC_STD + det.PC_MEAN  # back to 0..1 display values
        dark = shown.mean(2) < 0.5  # the bar stays near black, the air near white, whatever the palette
        ys, xs = np.nonzero(dark)
        found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        np.testing.assert_allclose(b[0].numpy(), found, atol=2.5)
        w, h = float(b[0, 2] - b[0, 0]), float(b[0, 3] - b[0, 1])
        stretched += not (w / h == pytest.approx(4.0, rel=0.1) or h / w == pytest.approx(4.0, rel=0.1))
    assert stretched >= 5, "aspect 1.6 never stretched the bar"
    with pytest.raises(ValueError, match="aspect"):
        det.Geometry(aspect=0.5)
    with pytest.raises(ValueError, match="scale range"):
        det.Geometry(2.0, 1.0)


def test_detector_trains_and_checkpoint_resumes(cache: Path, tmp_path: Path) -> None:
    ds = load_det(cache)
    ckpt = tmp_path / "d.pt"
    cfg = det.TrainConfig(steps=3, batch=2, size=96, width=8, fpn=16, checkpoint_every=2)
    model = det.train(ds, ckpt, cfg, progress=lambda _m: None)
    assert ckpt.is_file()
    assert torch.load(ckpt, weights_only=False)["step"] == 3
    boxes, scores = model(torch.from_numpy(det.plain(ds.images[0], "pc", 96)[None]))
    assert boxes.shape[-1] == 4 and scores.shape == boxes.shape[:2]
    assert float(scores.detach().min()) >= 0 and float(scores.detach().max()) <= 1
    msgs: list[str] = []
    det.train(ds, ckpt, cfg, progress=msgs.append)  # already finished: resumes at step 3 and stops
    assert any("resumed" in m for m in msgs)


def test_tiny_stfpm_exports_to_a_loadable_bundle(cache: Path, tmp_path: Path) -> None:
    from export.recipes.pack import pack

    crops = load_crops(cache)
    x = sc.crop_inputs(crops)
    cfg = sc.ScorerConfig(teacher_steps=2, student_steps=2, batch=4)
    teacher, names = sc.train_teacher(x, crops.kind, tmp_path / "t.pt", cfg, progress=lambda _m: None)
    assert set(names) == set(crops.kind.tolist())
    model = sc.train_student(teacher, x, tmp_path / "s.pt", cfg, progress=lambda _m: None)
    raw = sc.raw_scores(model, x)
    assert raw.shape == (len(x),) and np.isfinite(raw).all() and (raw >= 0).all()
    thr, low = float(np.quantile(raw, 0.5)), float(raw.min())
    norm = ScoreNormalisation(NormalisationKind.CENTRED, low, low + 2 * (thr - low) + 1e-6, thr)
    calib = np.repeat(x, 3, axis=0)
    pack(model, Role.SCORER, sc.contract(), {"score": 0.5}, norm, calib[:16], calib[16:24],
                  tmp_path / "bundle", "tiny-stfpm", "0", "smoke", "smoke", progress=lambda _m: None, int8=False)
    loaded = load_bundle(tmp_path / "bundle")
    assert loaded.manifest.role is Role.SCORER
    assert loaded.manifest.parity is not None and loaded.manifest.parity.passed
    assert not loaded.forced



def test_teacher_checkpoint_resumes_then_loads_when_finished(cache: Path, tmp_path: Path) -> None:
    crops = load_crops(cache)
    x, ckpt = sc.crop_inputs(crops), tmp_path / "t.pt"
    cfg = sc.ScorerConfig(teacher_steps=5, batch=4, checkpoint_every=2)

    def stop_at_4(msg: str) -> None:
        if "step 4/" in msg:
            raise KeyboardInterrupt  # an interrupted run: the checkpoint holds step 2
    with pytest.raises(KeyboardInterrupt):
        sc.train_teacher(x, crops.kind, ckpt, cfg, progress=stop_at_4)
    assert torch.load(ckpt, weights_only=False)["step"] == 2
    msgs: list[str] = []
    sc.train_teacher(x, crops.kind, ckpt, cfg, progress=msgs.append)
    assert any("resumed at step 2" in m for m in msgs)
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == state["total"] == 5
    # finished: loaded as it is, without data and whatever the new config says (the PaDiM recipe relies on it)
    msgs.clear()
    teacher, names = sc.train_teacher(x[:0], crops.kind[:0], ckpt, sc.ScorerConfig(teacher_steps=50),
                                      progress=msgs.append)
    assert msgs == [f"teacher loaded from {ckpt}"] and not teacher.training
    assert names == tuple(sorted(set(crops.kind.tolist())))
    # the input it was trained on is kept; a checkpoint from before that was stored is taken as hlz, and says so
    assert state["channels"] == "hlz"
    with pytest.raises(ValueError, match="trained on hlz crops, not pc"):
        sc.load_teacher(ckpt, "pc")
    del state["channels"]
    torch.save(state, ckpt)
    assert sc.load_teacher(ckpt, "hlz")[1] == names
    with pytest.raises(ValueError, match="does not say its input: taken as hlz"):
        sc.train_teacher(x[:0], crops.kind[:0], ckpt, sc.ScorerConfig(channels="pc"), progress=msgs.append)


def test_box_augmentation_pads_with_air_and_is_identity_without_zoom() -> None:
    x = torch.zeros(64, 3, 16, 16)  # object material everywhere (normalised value 0)
    torch.manual_seed(0)  # the noise comes from torch's generator
    same = sc._augment_box(x, np.random.default_rng(3), scale=0.0, shift=0.0)
    torch.manual_seed(0)
    torch.testing.assert_close(same, sc._augment(x, np.random.default_rng(3)), atol=1e-5, rtol=0)
    corners = sc._augment_box(x, np.random.default_rng(4), scale=0.4, shift=0.0)[:, :, 0, 0]
    # zoomed out → the corner shows air (the composer's letterbox padding, not 0), zoomed in → the object plus
    # a little noise (sigma <= 0.12 normalised); between the two a bilinear blend
    assert bool(((corners - sc.AIR).abs() < 1e-4).any()) and bool((corners.abs() < 0.7).any())
    assert bool((corners > -0.7).all()) and bool((corners < sc.AIR + 1e-4).all())


def test_stfpm_topk_score_is_the_mean_of_the_largest_map_pixels() -> None:
    torch.manual_seed(0)
    teacher, student = sc.Backbone(3, 0).eval(), sc.Backbone(3, 0).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        m1, s1 = sc.StfpmScorer(teacher, student)(x)
        m8, s8 = sc.StfpmScorer(teacher, student, topk=8)(x)
        m3, _ = sc.StfpmScorer(teacher, student, weights=(0.0, 0.0, 1.0))(x)
    flat = np.sort(m1.numpy().reshape(3, -1), axis=1)[:, ::-1]
    np.testing.assert_allclose(s1.numpy(), flat[:, 0], rtol=1e-6)
    np.testing.assert_allclose(s8.numpy(), flat[:, :8].mean(axis=1), rtol=1e-5)
    torch.testing.assert_close(m8, m1)
    assert m3.shape == m1.shape and bool((m3 < m1).all())  # two of three non-negative terms left out
    with pytest.raises(ValueError, match="topk"):
        sc.StfpmScorer(teacher, student, topk=0)


def test_kind_entropy_term_shifts_every_map_pixel_by_the_weighted_entropy() -> None:
    torch.manual_seed(0)
    teacher, student = sc.Backbone(3, 5).eval(), sc.Backbone(3, 0).eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        m0, s0 = sc.StfpmScorer(teacher, student)(x)
        m2, s2 = sc.StfpmScorer(teacher, student, kind_weight=2.0)(x)
        p = torch.softmax(teacher(x), dim=1).numpy()
    entropy = -(p * np.log(p)).sum(axis=1)
    assert np.all(entropy > 0) and np.all(entropy <= np.log(5) + 1e-6)
    np.testing.assert_allclose((m2 - m0).numpy(), np.broadcast_to(2 * entropy[:, None, None, None], m0.shape),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s2.numpy(), s0.numpy() + 2 * entropy, rtol=1e-5)
    with pytest.raises(ValueError, match="kind classifier head"):
        sc.StfpmScorer(sc.Backbone(3, 0), student, kind_weight=1.0)

def test_cli_help_has_examples() -> None:
    runner = CliRunner()
    for cmd in ("simulate", "detector", "eval-detector", "pack-detector", "scorer", "padim", "classifier",
                "synthetic-cache", "fuse", "stfpm-kind"):
        res = runner.invoke(app, [cmd, "--help"])
        assert res.exit_code == 0, res.output
        assert "Example: edge-export train" in res.output


def test_padim_refit_in_numpy_changes_the_onnx_scores(tmp_path: Path) -> None:
    import onnxruntime as ort

    from export.recipes import padim as pd

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(200, 256, pd.EMBED_DIM)).astype(np.float32)
    mean, inv_cov = pd.fit_gaussian(emb, eps=0.0)
    np.testing.assert_allclose(mean[3], emb[:, 3].mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(np.linalg.inv(inv_cov[3]), np.cov(emb[:, 3].T), rtol=1e-3, atol=1e-4)
    src = Path(__file__).resolve().parents[2] / "models" / "scorer-padim" / "onnx_fp32" / "scorer-padim.onnx"
    dst = tmp_path / "refit.onnx"
    pd.replace_gaussian(src, dst, mean, inv_cov)
    x = np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32)
    before = ort.InferenceSession(str(src)).run(None, {"input": x})[1]
    after = ort.InferenceSession(str(dst)).run(None, {"input": x})[1]
    assert after.shape == before.shape == (2,)
    assert not np.allclose(before, after)
    with pytest.raises(ValueError, match="shape"):
        pd.replace_gaussian(src, tmp_path / "bad.onnx", mean[:10], inv_cov)


def test_stfpm_kind_repacks_the_shipped_scorer_with_another_kind_term(cache: Path, tmp_path: Path) -> None:
    """No checkpoint needed: the shipped networks, another kind term; the rebuild must find that term again."""
    from edge.backends import open_backend
    from edge.bundles.manifest import Precision
    from export.recipes.rebuild import torch_from_bundle

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "entropy"
    result = CliRunner().invoke(app, ["stfpm-kind", str(repo / "models" / "scorer-stfpm"), "--val", str(cache),
                                      "--uncertainty", "entropy", "--kind-share", "4", "--version", "9.9",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    bundle = load_bundle(out)
    assert bundle.manifest.version == "9.9" and "kind entropy" in bundle.manifest.notes
    assert {m.precision for m in bundle.manifest.models} == {Precision.FP32}  # INT8 only via add-int8 later
    rebuilt = torch_from_bundle(out)
    assert rebuilt.uncertainty == "entropy" and rebuilt.kind_weight > 0
    x = sc.crop_inputs(load_crops(cache))[:8]
    with torch.inference_mode():
        _, score = rebuilt(torch.from_numpy(x))
    session = open_backend(bundle, "onnxruntime", Precision.FP32, 1, None)
    try:
        assert np.allclose(score.numpy(), session.run(x)["score"], atol=1e-4)
    finally:
        session.close()
    shipped = torch_from_bundle(repo / "models" / "scorer-stfpm")
    assert shipped.uncertainty == "energy"  # the shipped 2.1 (energy since 2.1) is recognised as such


@pytest.mark.parametrize("rule", ["max", "sum"])
def test_fuse_puts_the_scaled_insert_log_odds_on_every_pixel_of_the_stfpm_map(cache: Path, tmp_path: Path,
                                                                               rule: str) -> None:
    """The fused graph is the STFPM bundle's raw map combined (max or sum) with one constant per object: the
    classifier bundle's anomaly log-odds, scaled so that its benign spread on the val crops is ``--share`` x the
    STFPM score's (and, for max, its benign median the STFPM score's)."""
    from edge.backends import open_backend
    from edge.bundles.manifest import Precision
    from export.recipes.rebuild import torch_from_bundle
    from export.recipes.scorer import benign_spread

    repo = Path(__file__).resolve().parents[2]
    stfpm_dir, clf_dir, out = repo / "models" / "scorer-stfpm", repo / "models" / "classifier-threat", tmp_path / "f"
    result = CliRunner().invoke(app, ["fuse", str(stfpm_dir), str(clf_dir), "--val", str(cache), "--share", "2",
                                      "--rule", rule, "--version", "0.1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    bundle = load_bundle(out)
    assert bundle.manifest.name == "scorer-fused" and bundle.manifest.role == Role.SCORER
    assert "scorer-stfpm" in bundle.manifest.training_data and "classifier-threat" in bundle.manifest.training_data
    assert {m.precision for m in bundle.manifest.models} == {Precision.FP32}
    crops = load_crops(cache)
    x = sc.crop_inputs(crops)

    def run(b: Path) -> dict[str, np.ndarray]:
        session = open_backend(load_bundle(b), "onnxruntime", Precision.FP32, 1, None)
        try:
            return {k: np.asarray(v, np.float64) for k, v in session.run(x).items()}
        finally:
            session.close()

    fused, plain, probs = run(out), run(stfpm_dir), run(clf_dir)["probs"]
    odds = np.log(probs[:, 1]) - np.log(probs[:, 0])
    benign = sc.benign_training_mask(crops)
    weight = 2 * benign_spread(plain["score"][benign]) / benign_spread(odds[benign])
    offset = np.median(plain["score"][benign]) - weight * np.median(odds[benign]) if rule == "max" else 0.0
    term = (offset + weight * odds)[:, None, None, None]
    expected = np.maximum(plain["anomaly_map"], term) if rule == "max" else plain["anomaly_map"] + term
    tol = 1e-3 * (1 + np.abs(expected).max())
    assert np.allclose(fused["anomaly_map"], expected, atol=tol)
    top16 = np.sort(expected.reshape(len(x), -1), axis=1)[:, -16:].mean(axis=1)  # the shipped scorer's top-k
    assert np.allclose(fused["score"], top16, atol=tol)
    assert bundle.manifest.normalisation.centre == pytest.approx(np.quantile(fused["score"][benign], 0.95), rel=1e-3)
    rebuilt = torch_from_bundle(out)  # the eager benchmark's rebuild: weights from the graph, rule by matching
    with torch.inference_mode():
        _, score = rebuilt(torch.from_numpy(x[:8]))
    assert rebuilt.rule == rule and float(rebuilt.insert_weight) == pytest.approx(weight, rel=1e-3)
    assert np.allclose(score.numpy(), fused["score"][:8], atol=1e-4)
    refused = CliRunner().invoke(app, ["fuse", str(stfpm_dir), str(repo / "models" / "detector-agnostic"), "--val",
                                       str(cache), "--version", "0.1"])
    assert refused.exit_code != 0 and "not a two-class crop classifier" in refused.output


def test_classifier_from_a_rebuilt_teacher_keeps_its_folded_batch_norms(tmp_path: Path) -> None:
    """``train classifier --init-bundle``: the teacher rebuilt from ONNX carries its folded batch norms as identity
    statistics; training must not replace them with batch statistics (that would change what every layer sees)."""
    from export.recipes.rebuild import torch_from_bundle

    teacher = torch_from_bundle(Path(__file__).resolve().parents[2] / "models" / "scorer-stfpm").teacher
    x = np.random.default_rng(0).normal(0, 1, (16, 3, 64, 64)).astype(np.float32)
    y = np.arange(16) % 2 == 0
    cfg = sc.ScorerConfig(teacher_steps=3, batch=8)
    frozen = sc.train_classifier(x, y, tmp_path / "a.pt", cfg, teacher, lambda _m: None, frozen_batchnorm=True)
    loose = sc.train_classifier(x, y, tmp_path / "b.pt", cfg, teacher, lambda _m: None)
    key = "s1.0.1.running_mean"
    assert torch.equal(frozen.net.state_dict()[key], teacher.state_dict()[key])
    assert not torch.equal(loose.net.state_dict()[key], teacher.state_dict()[key])
    conv = "s1.0.0.weight"  # started from the teacher, moved by three small steps only
    assert torch.allclose(frozen.net.state_dict()[conv], teacher.state_dict()[conv], atol=0.05)
    # a finished classifier.pt keeps its input: reused for the same input, refused for the other one
    assert torch.load(tmp_path / "a.pt", weights_only=False)["channels"] == "hlz"
    again = sc.train_classifier(x, y, tmp_path / "a.pt", cfg, None, lambda _m: None)
    assert torch.equal(again.net.state_dict()[conv], frozen.net.state_dict()[conv])
    with pytest.raises(ValueError, match="trained on hlz crops, not pc"):
        sc.train_classifier(x, y, tmp_path / "a.pt", sc.ScorerConfig(teacher_steps=3, batch=8, channels="pc"))
    torch.save(frozen.state_dict(), tmp_path / "old.pt")  # the bare weights, as written before the input was kept
    old = sc.train_classifier(x, y, tmp_path / "old.pt", cfg, None, lambda _m: None)
    assert torch.equal(old.net.state_dict()[conv], frozen.net.state_dict()[conv])
    # the check the CLI runs before loading any data: the same verdicts, nothing to check without a file
    with pytest.raises(ValueError, match="trained on hlz crops, not pc"):
        sc.check_checkpoint(tmp_path / "a.pt", "pc")
    with pytest.raises(ValueError, match="taken as hlz"):
        sc.check_checkpoint(tmp_path / "old.pt", "pc")
    sc.check_checkpoint(tmp_path / "old.pt", "hlz")
    sc.check_checkpoint(tmp_path / "none.pt", "pc")


def test_classifier_init_bundle_must_be_an_stfpm_scorer(cache: Path, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    for bundle, message in ((repo / "models" / "detector-agnostic", "not an STFPM scorer bundle"),
                            (tmp_path / "nowhere", "nowhere")):
        result = CliRunner().invoke(app, ["classifier", "--data", str(cache), "--ckpt-dir", str(tmp_path / "ck"),
                                          "--steps", "1", "--init-bundle", str(bundle)])
        assert result.exit_code == 1 and message in result.output, result.output
        assert not (tmp_path / "ck" / "classifier.pt").exists()  # refused before any training


def test_crop_inputs_are_what_the_runtime_composes_for_each_input(fresh_items: list[tuple[object, object]]) -> None:
    """The cache stores hlz then pc; a scorer trained on either slice must see what the composer gives the
    runtime for a bundle of that input, or a pc scorer would be trained on one picture and served another."""
    from edge.condition.composer import compose
    from export.recipes.simdata import CropSet, crop_store_contract

    image, _truth = fresh_items[0]
    boxes = np.asarray([[10.0, 20.0, 90.0, 70.0], [40.0, 5.0, 60.0, 120.0]])
    stored = compose(image, crop_store_contract(), boxes).astype(np.float16)  # type: ignore[arg-type]  # as cached
    cached = CropSet(stored, np.zeros(2, np.int64), np.asarray(["a", "b"]), np.asarray(["", ""]),
                     np.zeros(2, bool), np.zeros(2, bool), np.zeros(2, bool))
    for channels in ("hlz", "pc"):
        served = compose(image, sc.contract(channels=channels), boxes)  # type: ignore[arg-type]
        assert np.allclose(sc.crop_inputs(cached, channels), served, atol=5e-3), channels  # float16 cache
    assert not np.allclose(sc.crop_inputs(cached, "hlz"), sc.crop_inputs(cached, "pc"))
    with pytest.raises(ValueError, match="hlz, pc"):
        sc.crop_inputs(cached, "h")


def test_pc_scorer_trains_packs_and_repacks_on_pseudo_colour_crops(cache: Path, tmp_path: Path) -> None:
    """`train scorer --channels pc` writes a bundle that asks the runtime for pc crops, and `stfpm-kind` re-packs
    it on pc crops (its scores through ONNX Runtime equal the rebuilt graph's on the cache's pc channels)."""
    from edge.backends import open_backend
    from edge.bundles.manifest import Precision
    from edge.contracts import Channel
    from export.recipes.rebuild import torch_from_bundle

    first = tmp_path / "pc"
    result = CliRunner().invoke(app, ["scorer", "--data", str(cache), "--val", str(cache), "--ckpt-dir",
                                      str(tmp_path / "ck"), "--teacher-steps", "2", "--student-steps", "2",
                                      "--batch", "4", "--channels", "pc", "--kind-share", "2", "-o", str(first)])
    assert result.exit_code == 0, result.output
    assert load_bundle(first).contract.channels == (Channel.PC,)
    assert load_bundle(first).manifest.name == "scorer-stfpm-pc"
    assert "(pc 64x64)" in load_bundle(first).manifest.training_data
    out = tmp_path / "pc-energy"
    result = CliRunner().invoke(app, ["stfpm-kind", str(first), "--val", str(cache), "--uncertainty", "energy",
                                      "--kind-share", "2", "--version", "0.1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    bundle = load_bundle(out)
    assert bundle.contract.channels == (Channel.PC,) and bundle.manifest.name == "scorer-stfpm-pc"  # kept
    x = sc.crop_inputs(load_crops(cache), "pc")[:8]
    with torch.inference_mode():
        _, score = torch_from_bundle(out)(torch.from_numpy(x))
    session = open_backend(bundle, "onnxruntime", Precision.FP32, 1, None)
    try:
        assert np.allclose(score.numpy(), session.run(x)["score"], atol=1e-4)
    finally:
        session.close()
    bad = CliRunner().invoke(app, ["scorer", "--data", str(cache), "--val", str(cache), "--ckpt-dir",
                                   str(tmp_path / "ck2"), "--channels", "h"])
    assert bad.exit_code != 0 and "--channels must be one of hlz, pc" in bad.output
    # the pc teacher in ck/ is not reused for hlz crops (both have 3 channels, so it would run)
    assert torch.load(tmp_path / "ck" / "teacher.pt", weights_only=False)["channels"] == "pc"
    for cmd in (["scorer", "--val", str(cache)], ["classifier", "--calib", str(cache)]):
        mixed = CliRunner().invoke(app, [*cmd, "--data", str(cache), "--ckpt-dir", str(tmp_path / "ck"),
                                         "--channels", "hlz"])
        assert mixed.exit_code == 1 and "trained on pc crops, not hlz" in mixed.output, cmd
    assert not (tmp_path / "ck" / "classifier.pt").exists()
