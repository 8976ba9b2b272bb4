"""The numpy Gaussian: the batched accumulator equals the textbook two-pass fit, and the Mahalanobis reference
equals what the committed PaDiM graph computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from edge_tools.fit import GaussianAccumulator, fit_gaussian, mahalanobis_maps
from edge_tools.fit.padim_graph import EMBEDDING, embedding_model

PADIM_ONNX = Path(__file__).resolve().parents[2] / "models" / "scorer-padim" / "onnx_fp32" / "scorer-padim.onnx"


def test_batched_fit_equals_two_pass_numpy_even_far_from_zero() -> None:
    rng = np.random.default_rng(0)
    emb = (rng.normal(size=(300, 4, 5)) * [1, 2, 3, 4, 5] + 1000.0).astype(np.float32)
    acc = GaussianAccumulator()
    for i in range(0, 300, 7):  # uneven batches
        acc.add(emb[i:i + 7])
    mean, inv = acc.result(eps=0.0)
    for p in range(4):
        e = emb[:, p].astype(np.float64)
        np.testing.assert_allclose(mean[p], e.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(np.linalg.inv(inv[p]), np.cov(e.T), rtol=1e-3, atol=1e-3)
    mean2, inv2 = fit_gaussian(emb, eps=0.0, batch=64)
    np.testing.assert_allclose(mean2, mean, rtol=1e-6)
    np.testing.assert_allclose(inv2, inv, rtol=1e-4, atol=1e-6)


def test_numpy_reference_matches_the_graph_cut_at_its_embedding() -> None:
    model = onnx.load(str(PADIM_ONNX))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    x = np.random.default_rng(1).normal(size=(3, 3, 64, 64)).astype(np.float32)
    full = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})
    cut = embedding_model(model, str(PADIM_ONNX))
    assert [o.name for o in cut.graph.output] == [EMBEDDING]
    emb = ort.InferenceSession(cut.SerializeToString()).run(None, {"input": x})[0]
    assert emb.shape == (3, *inits["padim_mean"].shape)
    maps, scores = mahalanobis_maps(emb, inits["padim_mean"], inits["padim_inv_cov"], 16)
    np.testing.assert_allclose(maps, full[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(scores, full[1], rtol=1e-5)
