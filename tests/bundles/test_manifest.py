"""Manifest schema, sealing and consistency rules (pure data, no models), and the no-torch rule."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge.bundles import (
    BundleManifest,
    FileEntry,
    ModelEntry,
    ModelFormat,
    NormalisationKind,
    OutputSpec,
    Precision,
    Role,
    ScoreNormalisation,
)
from edge.bundles.manifest import manifest_from_dict, manifest_to_dict, seal
from edge.contracts import Channel, InputContract
from edge.errors import BundleError

REPO = Path(__file__).resolve().parents[2]


def _manifest(**changes: object) -> BundleManifest:
    base = BundleManifest(
        name="s", version="1", role=Role.SCORER, created_utc="2026-11-22T00:00:00Z",
        input=InputContract(channels=(Channel.HLZ,), height=64, width=64, mean=(0.1, 0.2, 0.3), std=(1, 2, 3)),
        outputs=(OutputSpec("amap", "anomaly_map", ("N", 1, 16, 16), "float32"),
                 OutputSpec("s", "score", ("N",), "float32"), OutputSpec("flag", None, ("N",), "bool")),
        models=(ModelEntry(ModelFormat.ONNX, Precision.FP32, "onnx_fp32/m.onnx", ("onnx_fp32/m.onnx",)),),
        files=(FileEntry("onnx_fp32/m.onnx", "a" * 64, 10),),
        thresholds={"score": 0.5},
        normalisation=ScoreNormalisation(NormalisationKind.CENTRED, low=1.0, high=3.0, centre=2.0),
    )
    return seal(replace(base, **changes))  # type: ignore[arg-type]


def test_round_trip_is_exact() -> None:
    m = _manifest()
    again = manifest_from_dict(manifest_to_dict(m))
    assert again == m and again.output_name("score") == "s" and again.output_name("labels") is None


def test_every_schema_problem_is_listed_by_key() -> None:
    data = manifest_to_dict(_manifest())
    data["role"] = "detektor"
    data["input"]["channels"] = ["rgb"]
    data["surprise"] = 1
    with pytest.raises(BundleError) as info:
        manifest_from_dict(data, source="b/bundle.yaml")
    lines = str(info.value).splitlines()
    assert any(line.startswith("b/bundle.yaml: role: 'detektor' is not one of") for line in lines)
    assert any(line.startswith("b/bundle.yaml: input.channels.0: 'rgb' is not one of") for line in lines)
    assert any("'surprise' was unexpected" in line for line in lines)


def test_newer_schema_version_is_refused_with_advice() -> None:
    data = manifest_to_dict(_manifest())
    data["schema_version"] = 2
    with pytest.raises(BundleError, match="schema_version: 2 is not supported; this runtime reads schema_version 1"):
        manifest_from_dict(data)


def test_consistency_rules() -> None:
    m = _manifest(outputs=(OutputSpec("s", "score", ("N",), "float32"),))
    with pytest.raises(BundleError, match="no output fills 'anomaly_map'"):
        manifest_from_dict(manifest_to_dict(m))
    m = _manifest(files=(FileEntry("../m.onnx", "a" * 64, 1),))
    with pytest.raises(BundleError) as info:
        manifest_from_dict(manifest_to_dict(m))
    assert "must stay inside the bundle folder" in str(info.value)
    assert "onnx_fp32/m.onnx has no entry in files" in str(info.value)
    m = _manifest(role=Role.CLASSIFIER, outputs=(OutputSpec("p", "probs", ("N", 2), "float32"),))
    with pytest.raises(BundleError, match="must name its classes"):
        manifest_from_dict(manifest_to_dict(m))


def test_centred_and_minmax_normalisation() -> None:
    centred = ScoreNormalisation(NormalisationKind.CENTRED, low=1.0, high=3.0, centre=2.0)
    np.testing.assert_allclose(centred.apply(np.array([2.0, 3.0, 10.0, -5.0], np.float32)), [0.5, 1.0, 1.0, 0.0])
    minmax = ScoreNormalisation(NormalisationKind.MINMAX, low=1.0, high=3.0)
    np.testing.assert_allclose(minmax.apply(np.array([1.0, 2.0, 4.0], np.float32)), [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="high > low"):
        ScoreNormalisation(NormalisationKind.MINMAX, low=1.0, high=1.0)



def test_logistic_normalisation_keeps_order_where_centred_clips() -> None:
    logistic = ScoreNormalisation(NormalisationKind.LOGISTIC, low=1.0, high=3.0, centre=2.0)
    raw = np.array([-5.0, 1.0, 2.0, 3.0, 4.0, 6.0], np.float32)
    out = logistic.apply(raw)
    # 1 / (1 + exp(-4 (s - 2) / 2)) by hand: s = 2 -> 0.5, s = 3 -> 1 / (1 + e^-2), s = 4 -> 1 / (1 + e^-4)
    np.testing.assert_allclose(out[2:5], [0.5, 1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(-4.0))], rtol=1e-6)
    assert out.dtype == np.float32 and np.all(np.diff(out) > 0) and out.min() > 0 and out.max() < 1
    # 3, 4 and 6 all clip to 1.0 under 'centred'; 'logistic' keeps them apart, same decisions at 0.5
    centred = ScoreNormalisation(NormalisationKind.CENTRED, low=1.0, high=3.0, centre=2.0).apply(raw)
    assert len(set(centred[3:].tolist())) == 1
    np.testing.assert_array_equal(out >= 0.5, centred >= 0.5)
    # the same slope as 'centred' at the threshold (1 / (high - low))
    eps = np.float32(1e-3)
    slope = (logistic.apply(np.array([2.0 + eps], np.float32)) - 0.5) / eps
    np.testing.assert_allclose(slope, 0.5, rtol=1e-2)
    assert np.isfinite(logistic.apply(np.array([1e30, -1e30], np.float32))).all()
    m = _manifest(normalisation=logistic)
    assert manifest_from_dict(manifest_to_dict(m)).normalisation == logistic

def test_runtime_bundle_and_backend_packages_import_no_torch() -> None:
    code = ("import sys\n"
            "import edge.bundles, edge.backends, edge.backends.openvino, edge.backends.onnxruntime\n"
            "import edge.backends.adapters, edge.bundles.loader\n"
            "print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
