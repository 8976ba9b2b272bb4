"""import-anomalib on anomalib's own exports in ../shared/realdata/anomalib: our bundle reproduces anomalib's
scores and maps (its `expected/` outputs), with both backends, FP32 and FP16."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.backends import open_backend
from edge.bundles import Precision, ScorerOutputs, load_bundle
from export.anomalib_import import anomalib_input, import_anomalib

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "anomalib"
IMAGES = ("good_0", "good_1", "good_2", "anomalous_0", "anomalous_1", "anomalous_2")

pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"anomalib fixtures not found at {REALDATA}")


def test_png_preprocessing_reproduces_anomalibs_input_tensor() -> None:
    for name in IMAGES:
        bgr = cv2.imread(str(REALDATA / "images" / f"{name}.png"), cv2.IMREAD_COLOR)
        ours = anomalib_input(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        np.testing.assert_array_equal(ours, np.load(REALDATA / "images" / f"{name}.input.npy"))


@pytest.mark.parametrize("model", ["padim", "patchcore", "stfpm"])
def test_imported_bundle_reproduces_anomalib(model: str, tmp_path: Path) -> None:
    bundle = import_anomalib(REALDATA / model, tmp_path / model, model, "1", 128, 128, images=REALDATA / "images")
    loaded = load_bundle(tmp_path / model)
    assert loaded.model_ref == bundle.model_ref
    parity = loaded.manifest.parity
    assert parity is not None and parity.passed and parity.samples == len(IMAGES)
    assert {(m.format, m.precision) for m in loaded.manifest.models} == {
        ("onnx", "fp32"), ("openvino", "fp32"), ("openvino", "fp16")}
    x = np.concatenate([np.load(REALDATA / "images" / f"{n}.input.npy") for n in IMAGES])
    expected = [json.loads((REALDATA / model / "expected" / f"{n}.json").read_text()) for n in IMAGES]
    ref_maps = np.concatenate([np.load(REALDATA / model / "expected" / f"{n}.npy") for n in IMAGES])
    ref_scores = np.array([e["results"]["openvino_fp32_ir"]["pred_score"] for e in expected], dtype=np.float32)
    ref_labels = np.array([e["results"]["openvino_fp32_ir"]["pred_label"] for e in expected])
    fp16_scores = np.array([e["results"]["openvino_fp16_ir"]["pred_score"] for e in expected], dtype=np.float32)
    for backend, precision, tol in (("openvino", Precision.FP32, 1e-5), ("onnxruntime", Precision.FP32, 1e-5),
                                    ("openvino", Precision.FP16, 5e-3)):
        session = open_backend(loaded, backend, precision=precision, threads=1)
        out = session.predict(x)
        assert isinstance(out, ScorerOutputs)
        assert out.anomaly_map.shape == (6, 1, 64, 64) and out.score.shape == (6,)
        np.testing.assert_allclose(out.score, ref_scores, atol=tol)
        np.testing.assert_allclose(out.anomaly_map, ref_maps.reshape(6, 1, 64, 64), atol=tol)
        if precision is Precision.FP32:
            threshold = loaded.manifest.thresholds["score"]
            assert list(out.score > threshold) == list(ref_labels)  # anomalib's own labels, its errors included
        else:
            np.testing.assert_allclose(out.score, fp16_scores, atol=1e-3)
        session.close()
