"""The PyTorch-eager side of the benchmark must run the shipped models: each reference bundle rebuilt from its
ONNX weights into its recipe's torch architecture gives ONNX Runtime's outputs on the same inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.backends import open_backend
from edge.bundles import Precision, load_bundle
from export.recipes.rebuild import torch_from_bundle

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["detector-agnostic", "scorer-stfpm", "classifier-threat"])
def test_rebuilt_torch_model_matches_onnx_runtime(name: str) -> None:
    import torch

    bundle = load_bundle(REPO / "models" / name)
    c = bundle.contract
    x = np.random.default_rng(2).normal(0.0, 1.0, (2, c.tensor_channels, c.height, c.width)).astype(np.float32)
    model = torch_from_bundle(REPO / "models" / name)  # benchmarks/eager_pipeline.torch_model
    with torch.inference_mode():
        out = model(torch.from_numpy(x))
    got = [out] if isinstance(out, torch.Tensor) else list(out)
    session = open_backend(bundle, "onnxruntime", Precision.FP32, 1, None)
    try:
        ref = session.run(x)
    finally:
        session.close()
    names = [o.name for o in bundle.manifest.outputs]
    assert len(got) >= len(names)
    for out_name, value in zip(names, got, strict=False):
        assert np.allclose(value.numpy(), ref[out_name], atol=1e-3, rtol=1e-3), (name, out_name)
