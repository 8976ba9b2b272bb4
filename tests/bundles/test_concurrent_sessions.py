"""The pipeline's item workers call one model session from two threads at once: each call must get the
outputs of its own input (a request shared between threads would hand one thread the other's tensors), and
closing a session must wait for calls in progress instead of freeing the model under them. OpenVINO must also
give each worker its own CPU stream: on one stream (what the latency hint makes) the workers' calls queue."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from edge.backends import open_model
from edge.backends.base import SessionOptions
from edge.backends.openvino import OpenVinoSession
from edge.config.models import ModelsConfig
from edge.errors import BackendError
from edge.screening import load_models

REPO = Path(__file__).resolve().parents[2]
SCORER = REPO / "models" / "scorer-stfpm"


def _onnx() -> Path:
    found = sorted(SCORER.glob("onnx_fp32/*.onnx"))
    assert found, f"no ONNX model in {SCORER}"
    return found[0]


def _inputs(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.random((2, 3, 64, 64), dtype=np.float32) * (i + 1) for i in range(n)]


@pytest.mark.parametrize(("backend", "streams"), [("openvino", 1), ("openvino", 2), ("onnxruntime", 1)])
def test_two_threads_on_one_session_each_get_their_own_outputs(backend: str, streams: int) -> None:
    session = open_model(_onnx(), backend, SessionOptions(threads=1, streams=streams))
    inputs = _inputs(6)
    expected = [session.run(x) for x in inputs]
    mismatches: list[str] = []
    errors: list[BaseException] = []

    def hammer(offset: int) -> None:
        try:
            for k in range(30):
                i = (k + offset) % len(inputs)
                got = session.run(inputs[i])
                for name, value in expected[i].items():
                    if not np.allclose(got[name], value, rtol=1e-5, atol=1e-6):
                        mismatches.append(f"thread {offset} call {k}: {name} differs for input {i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(o,)) for o in (0, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert not mismatches, mismatches[:5]
    session.close()
    with pytest.raises(BackendError, match="closed"):
        session.run(inputs[0])


def test_openvino_close_waits_for_a_call_in_progress() -> None:
    session = open_model(_onnx(), "openvino", SessionOptions(threads=1))
    big = np.random.default_rng(1).random((64, 3, 64, 64), dtype=np.float32)
    results: list[object] = []
    started = threading.Event()

    def run() -> None:
        started.set()
        try:
            results.append(session.run(big))
        except BackendError as exc:
            results.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    started.wait(5)
    session.close()
    worker.join(30)
    assert len(results) == 1
    # Either the call got in before close (and completed with real outputs) or it was refused cleanly.
    outcome = results[0]
    if isinstance(outcome, BackendError):
        assert "closed" in str(outcome)
    else:
        assert isinstance(outcome, dict) and all(np.isfinite(v).all() for v in outcome.values())


@pytest.mark.parametrize("streams", [1, 2])
def test_openvino_compiles_one_stream_per_concurrent_caller(streams: int) -> None:
    session = open_model(_onnx(), "openvino", SessionOptions(threads=1, streams=streams))
    assert isinstance(session, OpenVinoSession)
    assert session.streams == streams
    session.close()


def test_the_service_compiles_its_models_for_its_item_workers() -> None:
    cfg = ModelsConfig(detector=REPO / "models" / "detector-agnostic", scorer=SCORER, backend="openvino", threads=1,
                       allow_unsigned=True)  # the reference bundles are not signed
    models = load_models(cfg, streams=2)
    try:
        for model in (models.detector, models.scorer):
            assert model is not None
            inner = model.session._session
            assert isinstance(inner, OpenVinoSession)
            assert inner.streams == 2, model.bundle.manifest.name
    finally:
        models.close()


def test_streams_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="streams"):
        SessionOptions(streams=0)
