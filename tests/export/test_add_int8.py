"""INT8 judged at every operating point a bundle has: decisions at the object and the item threshold, the
flagged objects not moving, and ``add-int8`` turning an FP32-only bundle into one the service runs at INT8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.bundles import ModelFormat, Precision, Role, load_bundle
from edge.bundles.manifest import NormalisationKind, ScoreNormalisation
from edge.bundles.outputs import item_threshold_detector, item_threshold_note
from edge.bundles.writer import rewrite_manifest
from edge.config.models import ModelsConfig
from edge.contracts import Channel, InputContract
from edge.screening import load_models
from export.add_int8 import add_int8
from export.calibration import InputSet
from export.errors import ExportError, QuantizationRefused
from export.meta import ExportMeta, default_outputs
from export.parity import Candidate, agreement, flag_shifts, operating_points
from export.quantize import check_flags
from tests.export.conftest import Built

REPO = Path(__file__).resolve().parents[2]
CROP = InputContract(channels=(Channel.HLZ,), height=8, width=8)


def _meta(role: Role, thresholds: dict[str, float], classes: tuple[str, ...] = ()) -> ExportMeta:
    return ExportMeta(role=role, contract=CROP, outputs=default_outputs(role), thresholds=thresholds,
                      classes=classes)


def test_a_scorer_is_judged_at_its_item_threshold_too() -> None:
    meta = _meta(Role.SCORER, {"score": 0.5, "item": 0.9})
    ref = np.array([0.1, 0.6, 0.7, 0.95, 0.2, 0.85, 0.3, 0.4, 0.55, 0.65], np.float32)
    got = ref.copy()
    got[[5, 8]] = [0.92, 0.58]  # 0.85 -> 0.92 crosses the item threshold only
    assert operating_points(meta) == {"score": 0.5, "item": 0.9}
    assert agreement(meta, {"score": ref}, {"score": got}) == pytest.approx(0.9)
    assert agreement(_meta(Role.SCORER, {"score": 0.5}), {"score": ref}, {"score": got}) == 1.0


def test_a_benign_anomaly_classifier_is_judged_at_its_threshold_not_its_argmax() -> None:
    meta = _meta(Role.CLASSIFIER, {"score": 0.7}, ("benign", "anomaly"))
    ref = np.array([[0.4, 0.6], [0.2, 0.8], [0.9, 0.1], [0.35, 0.65]], np.float32)
    got = np.array([[0.45, 0.55], [0.28, 0.72], [0.9, 0.1], [0.25, 0.75]], np.float32)
    # argmax agrees everywhere; at 0.7 the last crop is flagged by one model only
    assert agreement(meta, {"probs": ref}, {"probs": got}) == pytest.approx(0.75)
    shifts = flag_shifts(meta, {"probs": ref}, {"probs": got})
    assert [(s.point, s.reference, s.candidate, s.both) for s in shifts] == [("score", 1, 2, 1)]


def test_a_classifier_without_an_anomaly_class_is_scored_by_its_last_column_as_the_score_stage_does() -> None:
    meta = _meta(Role.CLASSIFIER, {"score": 0.5}, ("benign", "a", "b"))
    ref = np.array([[0.2, 0.7, 0.1], [0.3, 0.1, 0.6]], np.float32)
    got = np.array([[0.2, 0.2, 0.6], [0.3, 0.1, 0.6]], np.float32)
    # argmax differs on the first crop (a vs b), the last-column decision too (0.1 -> 0.6)
    shifts = flag_shifts(meta, {"probs": ref}, {"probs": got})
    assert [(s.reference, s.candidate, s.both) for s in shifts] == [(1, 2, 1)]
    assert agreement(meta, {"probs": ref}, {"probs": got}) == pytest.approx(0.5)


def test_detectors_keep_one_operating_point_and_no_flag_guard() -> None:
    meta = _meta(Role.DETECTOR, {"score": 0.3, "item": 0.9})
    assert operating_points(meta) == {"score": 0.3}
    scores = {"scores": np.array([[0.2, 0.5]], np.float32), "boxes": np.zeros((1, 2, 4), np.float32)}
    assert flag_shifts(meta, scores, scores) == []


def test_an_int8_model_that_doubles_the_alarms_is_refused_though_it_agrees_on_99_percent() -> None:
    meta = _meta(Role.SCORER, {"score": 0.5, "item": 0.9})
    rng = np.random.default_rng(3)
    ref = rng.uniform(0.0, 0.89, 2000).astype(np.float32)
    ref[:20] = 0.95  # 1% of the objects flagged at the item point
    got = ref.copy()
    got[20:40] = 0.93  # INT8 flags 20 more
    assert agreement(meta, {"score": ref}, {"score": got}) >= 0.99
    shifts = flag_shifts(meta, {"score": ref}, {"score": got})
    item = next(s for s in shifts if s.point == "item")
    assert (item.reference, item.candidate, item.both) == (20, 40, 20)
    with pytest.raises(QuantizationRefused, match=r"item 0\.9: FP32 flags 20, INT8 40"):
        check_flags(shifts, 0.1, len(ref))
    calm = ref.copy()
    calm[20] = 0.91  # one more flag of 20: 5%
    check_flags(flag_shifts(meta, {"score": ref}, {"score": calm}), 0.1, len(ref))


def _items(contract: InputContract, n: int) -> np.ndarray:
    rng = np.random.default_rng(11)
    planes = rng.random((n, contract.tensor_channels, contract.height, contract.width), dtype=np.float32)
    planes *= rng.uniform(0.05, 1.0, (n, 1, 1, 1)).astype(np.float32)
    mean = np.array(contract.mean, np.float32)[:, None, None]
    std = np.array(contract.std, np.float32)[:, None, None]
    return ((planes - mean) / std).astype(np.float32)


def test_add_int8_writes_a_bundle_the_service_runs_at_int8(built: dict[Role, Built], tmp_path: Path) -> None:
    b = built[Role.SCORER]
    src = b.bundle
    x = _items(src.contract, 64)
    thresholds = {"score": float(src.manifest.thresholds["score"]), "item": float(src.manifest.thresholds["score"])}
    with_item = rewrite_manifest(src, tmp_path / "fp32", thresholds=thresholds, version="0.2",
                                 notes=item_threshold_note(0.5, "test", "detector-agnostic@0.9") + "tiny")
    assert not any(m.precision is Precision.INT8 for m in with_item.manifest.models)
    out = add_int8(with_item.root, InputSet(x, None, "test"), tmp_path / "int8", "0.3", max_drop=0.2,
                   max_flag_change=1.0, threads=1, progress=lambda _m: None)
    m = out.manifest
    assert m.version == "0.3" and m.thresholds == with_item.manifest.thresholds
    assert m.normalisation == with_item.manifest.normalisation
    # the item-threshold prefix stays first: the service reads the detector it was measured through from it
    assert item_threshold_detector(m.notes) == "detector-agnostic@0.9"
    assert m.notes.startswith("[item threshold 0.5: test; detector detector-agnostic@0.9] [int8 added: decision "
                              "agreement ") and m.notes.endswith("] tiny")
    assert (ModelFormat.OPENVINO, Precision.INT8) in {(e.format, e.precision) for e in m.models}
    old_files = {f.path: f.sha256 for f in with_item.manifest.files}
    new_files = {f.path: f.sha256 for f in m.files}
    assert {p: h for p, h in new_files.items() if p in old_files} == old_files  # FP32 files untouched
    assert m.parity is not None and m.parity.passed
    int8_entry = next(e for e in m.parity.entries if e.precision is Precision.INT8)
    assert int8_entry.passed and int8_entry.sha256 in set(new_files.values()) - set(old_files.values())
    assert len(m.parity.entries) == len(with_item.manifest.parity.entries) + 1  # type: ignore[union-attr]
    assert "openvino/int8 (added in 0.3)" in m.parity.reference
    # again, in place: the INT8 model, its parity entry, note and reference are replaced, not stacked
    again = add_int8(out.root, InputSet(x, None, "test"), out.root, "0.4", max_drop=0.2,
                     max_flag_change=1.0, threads=1, progress=lambda _m: None).manifest
    assert load_bundle(out.root).manifest.version == "0.4"
    assert again.notes.count("[int8 added") == 1 and again.notes.endswith("] tiny")
    assert sum(e.precision is Precision.INT8 for e in again.models) == 1
    assert again.parity is not None and len(again.parity.entries) == len(m.parity.entries)
    assert again.parity.reference.count("added in") == 1 and "added in 0.4" in again.parity.reference
    assert again.parity.reference.startswith(with_item.manifest.parity.reference)  # type: ignore[union-attr]
    models = load_models(ModelsConfig(detector=REPO / "models" / "detector-agnostic", scorer=out.root,
                                      backend="openvino", precision="int8", threads=1,
                                      allow_unsigned=True))  # the reference bundles are not signed
    try:
        assert models.scorer is not None and models.scorer.session.precision is Precision.INT8
        # INT8 found for both (no fallback note); the item threshold was measured through another detector
        assert models.degraded is not None and "runs on" not in models.degraded
        assert "measured through detector-agnostic@0.9" in models.degraded
        scores = models.scorer.session.predict(x[:8])
        assert np.all(np.isfinite(scores.score))  # type: ignore[union-attr]
    finally:
        models.close()


def test_add_int8_refuses_to_replace_another_non_empty_folder(built: dict[Role, Built], tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("site data")
    src = built[Role.SCORER].bundle
    with pytest.raises(ExportError, match="not empty"):
        add_int8(src.root, InputSet(_items(src.contract, 16), None, "t"), precious, "2", progress=lambda _m: None)
    assert (precious / "keep.txt").read_text() == "site data"


def test_quantize_judges_flags_on_the_bundles_normalisation(built: dict[Role, Built], tmp_path: Path) -> None:
    """A renormalised bundle's scale lives only in bundle.yaml; the guard must count flags on that scale."""
    from export.parity import run_candidate
    from export.quantize import quantize

    b = built[Role.SCORER]
    x = _items(b.bundle.contract, 64)
    raw = run_candidate(Candidate("openvino", Precision.FP32, b.xml), x[3::4], 1)["score"].reshape(-1)
    centre = float(np.median(raw))
    logistic = ScoreNormalisation(kind=NormalisationKind.LOGISTIC, low=float(raw.min()), high=float(raw.max()),
                                  centre=centre)
    thresholds = {"score": 0.5, "item": 0.6}
    result = quantize(b.xml, InputSet(x, None, "t").split(4)[0], InputSet(x[3::4], None, "v"),
                      tmp_path / "q.xml", max_drop=1.0, max_flag_change=10.0, threads=1,
                      thresholds=thresholds, normalisation=logistic)
    expected = {k: int((logistic.apply(raw) >= t).sum()) for k, t in thresholds.items()}
    assert {s.point: s.reference for s in result.flags} == expected
    assert expected["score"] != int((b.meta.normalisation.apply(raw) >= 0.5).sum()) or b.meta.normalisation == logistic


def test_add_int8_needs_an_openvino_fp32_model(built: dict[Role, Built], tmp_path: Path) -> None:
    from export.bundle import BundleModel, make_bundle

    b = built[Role.SCORER]
    onnx_only = make_bundle(tmp_path / "onnx-only", "tiny-onnx", "1", b.meta,
                            [BundleModel(ModelFormat.ONNX, Precision.FP32, b.onnx)], b.bundle.manifest.parity)
    with pytest.raises(ExportError, match="no OpenVINO FP32 model"):
        add_int8(onnx_only.root, InputSet(_items(onnx_only.contract, 16), None, "t"), tmp_path / "o", "2",
                 progress=lambda _m: None)
    assert not (tmp_path / "o").exists()
