"""Every inference backend through the same cases (``edge.backends.base.InferenceSession``, the inference port),
on a small real bundle (the reference threat classifier, 64x64 hlz): OpenVINO and ONNX Runtime. A new backend
joins by its entry in ``edge.backends.BACKENDS``, which this suite is parametrised over.

The cases are the port's promises: the outputs are keyed by the bundle's graph output names; a batch of N gives N
rows, each the same as that item run alone; the backends agree with each other; anything the runtime would choke
on (wrong dtype, rank, empty batch, wrong size, a closed session) is a ``BackendError``, never the runtime's own
exception; ``close`` may be called twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.backends import BACKENDS, open_backend, open_model
from edge.backends.base import InferenceSession, SessionOptions
from edge.bundles.loader import Bundle, load_bundle
from edge.bundles.manifest import ModelFormat, Precision
from edge.errors import BackendError, BundleError

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "models" / "classifier-threat"


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load_bundle(BUNDLE)


def _batch(n: int, bundle: Bundle, seed: int = 0) -> np.ndarray:
    c = bundle.contract
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c.tensor_channels, c.height, c.width)).astype(np.float32)


def _model_path(bundle: Bundle, backend: str) -> Path:
    available = {(m.format, m.precision) for m in bundle.manifest.models}
    fmt = next(f for f in BACKENDS[backend][2] if (f, Precision.FP32) in available)
    return bundle.model_path(fmt, Precision.FP32)


@pytest.fixture(params=sorted(BACKENDS))
def session(request: pytest.FixtureRequest, bundle: Bundle) -> Iterator[InferenceSession]:
    """A bare session (the port) over the bundle's FP32 model in the backend's preferred format."""
    opened = open_model(_model_path(bundle, request.param), request.param, SessionOptions(threads=1))
    yield opened
    opened.close()


def test_outputs_come_by_the_bundles_graph_names(session: InferenceSession, bundle: Bundle) -> None:
    names = {o.name for o in bundle.manifest.outputs}
    assert set(session.output_names) == names
    assert session.input_name == bundle.contract.input_name
    out = session.run(_batch(1, bundle))
    assert set(out) == names
    assert all(isinstance(v, np.ndarray) and v.shape[0] == 1 for v in out.values())


def test_a_batch_is_its_items_run_alone(session: InferenceSession, bundle: Bundle) -> None:
    batch = _batch(3, bundle, seed=1)
    together = session.run(batch)
    for k in range(3):
        alone = session.run(batch[k:k + 1])
        for name, value in alone.items():
            assert together[name].shape[0] == 3
            np.testing.assert_allclose(together[name][k:k + 1], value, rtol=1e-4, atol=1e-5, err_msg=name)


def test_outputs_are_fresh_arrays(session: InferenceSession, bundle: Bundle) -> None:
    batch = _batch(1, bundle)
    first = session.run(batch)
    kept = {name: value.copy() for name, value in first.items()}
    session.run(_batch(1, bundle, seed=9))
    for name, value in first.items():
        np.testing.assert_array_equal(value, kept[name], err_msg=f"{name} was overwritten by the next run")


@pytest.mark.parametrize(("what", "make"), [
    ("float64", lambda b: _batch(1, b).astype(np.float64)),
    ("rank 3", lambda b: _batch(1, b)[0]),
    ("empty batch", lambda b: _batch(1, b)[:0]),
    ("not an array", lambda b: _batch(1, b).tolist()),
    ("wrong size", lambda b: np.zeros((1, b.contract.tensor_channels, 7, 5), np.float32)),
])
def test_bad_input_is_a_backend_error(session: InferenceSession, bundle: Bundle, what: str, make: object) -> None:
    # A wrong size included: OpenVINO refuses a batch tensor off the IR's declared (?, C, H, W) when the session
    # sets it as the request's input (the dict dispatcher it used before reshaped the request's own tensor and
    # ran any height and width); the bundle session's contract check (BundleError) comes first anyway.
    with pytest.raises(BackendError):
        session.run(make(bundle))  # type: ignore[operator]


def test_a_closed_session_refuses_runs_and_closes_twice(session: InferenceSession, bundle: Bundle) -> None:
    session.close()
    session.close()
    with pytest.raises(BackendError):
        session.run(_batch(1, bundle))


def test_the_backends_agree(bundle: Bundle) -> None:
    """Same bundle, same batch: every backend gives the same outputs by name (FP32, within float tolerance)."""
    batch = _batch(2, bundle, seed=3)
    results = {}
    for backend in sorted(BACKENDS):
        bound = open_backend(bundle, backend, Precision.FP32, threads=1)
        try:
            results[backend] = (bound.run(batch), bound.predict(batch))
        finally:
            bound.close()
    (first, (raw0, typed0)), *others = results.items()
    for backend, (raw, typed) in others:
        assert set(raw) == set(raw0)
        for name in raw0:
            np.testing.assert_allclose(raw[name], raw0[name], rtol=1e-3, atol=1e-4,
                                       err_msg=f"{backend} vs {first}: {name}")
        assert type(typed) is type(typed0)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_the_bundle_session_refuses_a_batch_off_its_contract(bundle: Bundle, backend: str) -> None:
    bound = open_backend(bundle, backend, Precision.FP32, threads=1)
    try:
        with pytest.raises(BundleError, match="input contract"):
            bound.run(np.zeros((1, bundle.contract.tensor_channels, 7, 5), np.float32))
        with pytest.raises(BackendError):
            bound.run(_batch(1, bundle).astype(np.float64))
    finally:
        bound.close()


def test_an_unknown_backend_or_a_missing_format_is_refused(bundle: Bundle) -> None:
    with pytest.raises(BackendError, match="did you mean 'openvino'"):
        open_backend(bundle, "openvin")
    assert ModelFormat.ONNX in BACKENDS["onnxruntime"][2]
