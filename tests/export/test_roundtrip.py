"""Every role: PyTorch → ONNX → OpenVINO → bundle → runtime loader → both backends give PyTorch's answers."""

from __future__ import annotations

import numpy as np
import pytest

from edge.backends import open_backend
from edge.bundles import (
    ClassifierOutputs,
    DetectorOutputs,
    Role,
    ScorerOutputs,
    SegmenterOutputs,
    load_bundle,
)
from edge.bundles.outputs import required_fields
from export.calibration import synthetic_inputs
from export.torch_to_onnx import run_torch
from tests.export.conftest import Built

BACKENDS = ("openvino", "onnxruntime")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("role", list(Role))
def test_bundle_matches_pytorch(built: dict[Role, Built], role: Role, backend: str) -> None:
    b = built[role]
    bundle = load_bundle(b.bundle.root)
    assert bundle.model_ref.role == str(role) and bundle.model_ref.sha256 == bundle.manifest.content_sha256
    assert bundle.manifest.parity is not None and bundle.manifest.parity.passed and not bundle.forced
    # Fresh inputs (not the parity ones), batch of 5 although the export example had batch 2: dynamic axis.
    x = synthetic_inputs(bundle.contract, 5, seed=11).inputs
    ref = run_torch(b.model, x, b.meta.output_names)
    session = open_backend(bundle, backend=backend, precision="fp32", threads=1)
    try:
        raw = session.run(x)
        assert set(raw) == set(ref)
        for name, want in ref.items():
            got = raw[name]
            assert got.shape == want.shape, name
            if np.issubdtype(want.dtype, np.floating):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))
            else:
                assert np.mean(got == want) >= 0.99, name
        typed = session.predict(x[:1])
    finally:
        session.close()
    record = {Role.DETECTOR: DetectorOutputs, Role.SCORER: ScorerOutputs, Role.CLASSIFIER: ClassifierOutputs,
              Role.SEGMENTER: SegmenterOutputs}[role]
    assert isinstance(typed, record)
    for field in required_fields(role):
        arr = getattr(typed, field)
        assert arr.shape[0] == 1 and not arr.flags.writeable


def test_detector_output_format(built: dict[Role, Built]) -> None:
    b = built[Role.DETECTOR]
    c = b.bundle.contract
    session = open_backend(b.bundle, backend="onnxruntime", threads=1)
    out = session.predict(synthetic_inputs(c, 2, seed=5).inputs)
    assert isinstance(out, DetectorOutputs)
    k = (c.height // 8) * (c.width // 8)
    assert out.boxes.shape == (2, k, 4) and out.scores.shape == (2, k)
    assert out.labels is not None and out.labels.dtype == np.int64 and out.labels.max() < 3
    assert np.all(out.boxes[..., 2] >= out.boxes[..., 0]) and np.all(out.boxes[..., 3] >= out.boxes[..., 1])
    assert np.all((out.scores >= 0) & (out.scores <= 1))
    # Box centres lie on the stride-8 grid in input pixels, so x spans the input width.
    cx = (out.boxes[0, :, 0] + out.boxes[0, :, 2]) / 2
    assert cx.min() < 8 and cx.max() > c.width - 8


def test_parity_agreement_is_meaningful(built: dict[Role, Built]) -> None:
    # The thresholds sit at the median PyTorch score, so both decisions occur and agreement is not trivial.
    for role in (Role.DETECTOR, Role.SCORER):
        report = built[role].bundle.manifest.parity
        assert report is not None
        for e in report.entries:
            assert e.decision_agreement is not None and e.decision_agreement >= 0.99
            assert e.max_rel < 1e-4
