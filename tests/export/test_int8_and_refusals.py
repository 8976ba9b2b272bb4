"""INT8 through NNCF with the accuracy guard; tampered, edited and forced bundles; backend errors."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge.backends import open_backend, open_model
from edge.bundles import ModelFormat, Precision, Role, ScorerOutputs, load_bundle
from edge.errors import BackendError, BundleError
from export.bundle import BundleModel, make_bundle
from export.calibration import InputSet, load_inputs, synthetic_inputs
from export.errors import ParityFailed, QuantizationRefused
from export.parity import DEFAULT_TOLERANCES, Candidate, Tolerance, run_batched, verify
from export.quantize import Metric, auroc, quantize
from export.torch_to_onnx import run_torch
from tests.export.conftest import Built


def _npy_folder(folder: Path, items: np.ndarray) -> Path:
    folder.mkdir()
    for i, x in enumerate(items):
        np.save(folder / f"{i:03d}.npy", x)
    return folder


@pytest.fixture(scope="module")
def int8_scorer(built: dict[Role, Built], tmp_path_factory: pytest.TempPathFactory) -> tuple[Built, Path, InputSet]:
    b = built[Role.SCORER]
    work = tmp_path_factory.mktemp("int8")
    c = b.meta.contract
    rng = np.random.default_rng(7)
    # Items of different brightness, so that scores spread like a real validation set's.
    planes = rng.random((48, c.tensor_channels, c.height, c.width), dtype=np.float32)
    planes *= rng.uniform(0.05, 1.0, (48, 1, 1, 1)).astype(np.float32)
    items = (planes - np.array(c.mean, np.float32)[:, None, None]) / np.array(c.std, np.float32)[:, None, None]
    data = load_inputs(_npy_folder(work / "data", items.astype(np.float32)), c)
    calib, val = data.split(4)
    out = work / "scorer_int8.xml"
    result = quantize(b.xml, calib, val, out, Metric.AGREEMENT, max_drop=0.05, subset_size=36, threads=1)
    assert result.path == out and out.is_file() and out.with_suffix(".bin").is_file()
    assert result.fp32_value == 1.0 and result.int8_value >= 0.95
    return b, out, val


def test_int8_bundle_runs_and_agrees(int8_scorer: tuple[Built, Path, InputSet], tmp_path: Path) -> None:
    b, int8_xml, val = int8_scorer
    # INT8 weights really are smaller than FP32 ones.
    assert int8_xml.with_suffix(".bin").stat().st_size < 0.6 * b.xml.with_suffix(".bin").stat().st_size
    ref = run_batched(lambda x: run_torch(b.model, x, b.meta.output_names), val.inputs)
    report = verify(b.meta, val.inputs, ref, "pytorch", [Candidate("openvino", Precision.FP32, b.xml),
                                                         Candidate("openvino", Precision.INT8, int8_xml)])
    bundle = make_bundle(tmp_path / "b", "scorer-int8", "1", b.meta,
                         [BundleModel(ModelFormat.OPENVINO, Precision.FP32, b.xml),
                          BundleModel(ModelFormat.OPENVINO, Precision.INT8, int8_xml)], report)
    assert {(m.format, m.precision) for m in bundle.manifest.models} == {
        (ModelFormat.OPENVINO, Precision.FP32), (ModelFormat.OPENVINO, Precision.INT8)}
    session = open_backend(bundle, "openvino", precision="int8", threads=1)
    out = session.predict(val.inputs)
    assert isinstance(out, ScorerOutputs) and np.all(np.isfinite(out.score))
    # INT8 moves single scores (an untrained tiny model is a poor INT8 subject); decisions must hold.
    thr = b.meta.thresholds["score"]
    assert np.mean((out.score >= thr) == (ref["score"] >= thr)) >= 0.9
    int8_entry = next(e for e in report.entries if e.precision is Precision.INT8)
    assert int8_entry.passed or (int8_entry.decision_agreement or 0) >= 0.9
    with pytest.raises(BundleError, match="onnx at int8"):
        open_backend(bundle, "onnxruntime", precision="int8")


def test_quantize_refuses_when_metric_drops(int8_scorer: tuple[Built, Path, InputSet], tmp_path: Path) -> None:
    b, _, val = int8_scorer
    # Labels that FP32 gets exactly right at its own threshold: accuracy 1.0; INT8 must then not lose any.
    ref = run_batched(lambda x: run_torch(b.model, x, b.meta.output_names), val.inputs)
    labels = (ref["score"] >= b.meta.thresholds["score"]).astype(np.int64)
    labelled = InputSet(val.inputs, labels, "labelled")
    out = tmp_path / "refused.xml"
    with pytest.raises(QuantizationRefused, match=r"accuracy fell from 1\.0000 \(FP32\)") as info:
        quantize(b.xml, labelled, labelled, out, Metric.ACCURACY, max_drop=-0.5, subset_size=12, threads=1)
    assert "allowed -0.5000" in str(info.value)
    assert not out.exists() and not out.with_suffix(".bin").exists()
    assert list(tmp_path.iterdir()) == []  # the temporary model is gone too


def test_auroc_against_hand_computed_cases() -> None:
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    # One tie between a positive and a negative counts half: (1 + 0.5) / 2.
    assert auroc(np.array([0.1, 0.5, 0.5, 0.9]), np.array([0, 0, 1, 1])) == pytest.approx(0.875)


def _copy(bundle_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(bundle_root, dst)
    return dst


def test_tampered_model_file_is_refused(built: dict[Role, Built], tmp_path: Path) -> None:
    root = _copy(built[Role.CLASSIFIER].bundle.root, tmp_path)
    target = root / "openvino_fp32" / "classifier_fp32.bin"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"classifier_fp32\.bin: sha256 .* does not match"):
        load_bundle(root)


def test_truncated_and_missing_files_are_refused(built: dict[Role, Built], tmp_path: Path) -> None:
    root = _copy(built[Role.SEGMENTER].bundle.root, tmp_path)
    onnx_file = root / "onnx_fp32" / "segmenter.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-10])
    (root / "openvino_fp32" / "segmenter_fp32.xml").unlink()
    with pytest.raises(BundleError) as info:
        load_bundle(root)
    text = str(info.value)
    assert "segmenter.onnx: size" in text and "segmenter_fp32.xml: listed in bundle.yaml but missing" in text


def test_edited_manifest_is_refused(built: dict[Role, Built], tmp_path: Path) -> None:
    root = _copy(built[Role.SCORER].bundle.root, tmp_path)
    manifest = root / "bundle.yaml"
    data = yaml.safe_load(manifest.read_text())
    data["thresholds"]["score"] = data["thresholds"]["score"] + 0.01
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(BundleError, match="changed after the bundle was built"):
        load_bundle(root)
    # An edit that also breaks the schema is reported by key.
    data["input"]["height"] = 0
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(BundleError, match=r"input\.height: 0 is less than the minimum of 1"):
        load_bundle(root)


def test_failing_parity_blocks_bundle_unless_forced(built: dict[Role, Built], tmp_path: Path) -> None:
    b = built[Role.CLASSIFIER]
    x = synthetic_inputs(b.meta.contract, 4, seed=2).inputs
    ref = run_torch(b.model, x, b.meta.output_names)
    strict = {**DEFAULT_TOLERANCES, Precision.FP32: Tolerance(rtol=0.0, min_agreement=1.0)}
    report = verify(b.meta, x, ref, "pytorch", [Candidate("openvino", Precision.FP32, b.xml)], strict)
    assert not report.passed and report.entries[0].max_rel > 0.0
    models = [BundleModel(ModelFormat.OPENVINO, Precision.FP32, b.xml)]
    with pytest.raises(ParityFailed, match="PARITY FAILED"):
        make_bundle(tmp_path / "nope", "c", "1", b.meta, models, report)
    assert not (tmp_path / "nope").exists()
    with pytest.raises(ParityFailed, match="no parity report"):
        make_bundle(tmp_path / "nope", "c", "1", b.meta, models, None)
    forced = make_bundle(tmp_path / "forced", "c", "1", b.meta, models, report, force=True)
    assert forced.forced and load_bundle(tmp_path / "forced").manifest.forced
    assert "forced: true" in (tmp_path / "forced" / "bundle.yaml").read_text()


def test_parity_must_cover_the_bundled_file(built: dict[Role, Built], tmp_path: Path) -> None:
    b = built[Role.CLASSIFIER]
    report = b.bundle.manifest.parity
    assert report is not None
    other = tmp_path / "other.onnx"
    shutil.copy(built[Role.SEGMENTER].onnx, other)
    with pytest.raises(ParityFailed, match=r"other\.onnx \(onnx/fp32\) was not checked"):
        make_bundle(tmp_path / "b", "c", "1", b.meta, [BundleModel(ModelFormat.ONNX, Precision.FP32, other)],
                    report)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_session_conformance(built: dict[Role, Built], backend: str) -> None:
    b = built[Role.CLASSIFIER]
    session = open_model(b.onnx, backend)
    assert session.input_name == "input" and session.output_names == ("probs",)
    x = synthetic_inputs(b.meta.contract, 3, seed=1).inputs
    first = session.run(x)["probs"]
    first[:] = -1.0  # callers own the arrays: the next run is unaffected
    second = session.run(x)["probs"]
    np.testing.assert_allclose(second.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(BackendError, match="float32"):
        session.run(x.astype(np.float64))
    with pytest.raises(BackendError, match=r"\(N, C, H, W\)"):
        session.run(x[0])
    session.close()
    with pytest.raises(BackendError, match="closed"):
        session.run(x)


def test_backend_choice_errors(built: dict[Role, Built]) -> None:
    bundle = built[Role.SCORER].bundle
    with pytest.raises(BackendError, match="did you mean 'openvino'"):
        open_backend(bundle, backend="openvin")
    with pytest.raises(BundleError, match=r"needs openvino or onnx at fp16"):
        open_backend(bundle, precision="fp16")
    session = open_backend(bundle, "onnxruntime")
    wrong = synthetic_inputs(replace(bundle.contract, height=16), 1).inputs
    with pytest.raises(BundleError, match="input contract wants"):
        session.run(wrong)
