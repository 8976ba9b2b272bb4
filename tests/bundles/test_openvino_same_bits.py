"""The OpenVINO session's settings are chosen for CPU time per call (how a batch goes in and how the outputs come
back, the compile configuration for the item workers' streams: docs/performance.md, "OpenVINO session
settings"), never at the price of a different score. So the reference pipeline's two INT8 models, opened as the
service opens them (one thread, two streams for two item workers), must give the very same bits as a plain
OpenVINO compile of the same IR with the default single-stream configuration, fed the old way (the dict
dispatcher, outputs copied from the request): batch by batch with the batch sizes the score stage sends (full
batches of 8 and a remainder, so the dynamic batch dimension changes between calls), and from two threads at once.
A lever that picked other kernels (static shapes do: the classifier's and the detector's outputs change in the
last bits) or another precision fails here. The caller's batch, which the session hands to OpenVINO without a
copy, must come back untouched."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from edge.backends import open_backend
from edge.bundles.loader import Bundle, load_bundle
from edge.bundles.manifest import ModelFormat, Precision

REPO = Path(__file__).resolve().parents[2]
# The score stage's calls for one item: a full batch, then the rest (an item has ~12 crops); 1 is the detector's.
CASES = [("detector-agnostic", (1, 1, 1, 1)), ("classifier-threat", (8, 4, 8, 1, 8, 8, 5, 2))]

Outputs = dict[str, np.ndarray]


def _batches(bundle: Bundle, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """Composer-like inputs: (x - 0.5) / 0.25 of values in [0, 1], a different batch each call."""
    c = bundle.contract
    rng = np.random.default_rng(30)
    return [((rng.random((n, c.tensor_channels, c.height, c.width), dtype=np.float32) - 0.5) / 0.25)
            for n in sizes]


def _reference(bundle: Bundle, batches: list[np.ndarray]) -> list[Outputs]:
    """A fresh default-configuration compile of the bundle's INT8 IR, one stream, the dict dispatcher."""
    core = ov.Core()
    model = core.read_model(str(bundle.model_path(ModelFormat.OPENVINO, Precision.INT8)))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    name = compiled.inputs[0].get_any_name()
    expected = []
    for batch in batches:
        request.infer({name: batch})
        expected.append({o.get_any_name(): np.array(request.get_tensor(o).data, copy=True) for o in compiled.outputs})
    return expected


def _same_bits(got: Outputs, want: Outputs) -> bool:
    return set(got) == set(want) and all(
        got[k].dtype == want[k].dtype and got[k].shape == want[k].shape and np.array_equal(got[k], want[k])
        for k in want)


@pytest.mark.parametrize(("name", "sizes"), CASES)
def test_the_service_session_gives_the_reference_bits(name: str, sizes: tuple[int, ...]) -> None:
    bundle = load_bundle(REPO / "models" / name)
    batches = _batches(bundle, sizes)
    expected = _reference(bundle, batches)
    bound = open_backend(bundle, "openvino", Precision.INT8, threads=1, streams=2)
    try:
        kept = [b.copy() for b in batches]
        for k, batch in enumerate(batches):
            got = dict(bound.run(batch))
            assert _same_bits(got, expected[k]), f"{name}: call {k} (batch {batch.shape[0]}) differs"
            assert np.array_equal(batch, kept[k]), f"{name}: the session wrote into the caller's batch"
        frozen = batches[0].copy()
        frozen.flags.writeable = False  # OpenVINO will not wrap a read-only array: the session copies it
        assert _same_bits(dict(bound.run(frozen)), expected[0])

        mismatches: list[str] = []
        errors: list[BaseException] = []

        def hammer(offset: int) -> None:
            try:
                for j in range(3 * len(batches)):
                    i = (j + offset) % len(batches)
                    if not _same_bits(dict(bound.run(batches[i])), expected[i]):
                        mismatches.append(f"thread {offset} call {j}: batch {i} differs")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=hammer, args=(o,)) for o in (0, len(batches) // 2 + 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert not mismatches, mismatches[:5]
    finally:
        bound.close()


def test_outputs_keep_their_names_and_do_not_alias_the_next_call() -> None:
    """The detector has two outputs (boxes, scores): each is returned under its own name, in arrays of their own
    that the same thread's next call does not overwrite."""
    bundle = load_bundle(REPO / "models" / "detector-agnostic")
    first_batch, second_batch = _batches(bundle, (1, 1))
    expected = _reference(bundle, [first_batch])[0]
    bound = open_backend(bundle, "openvino", Precision.INT8, threads=1, streams=2)
    try:
        first = dict(bound.run(first_batch))
        assert {k: v.shape for k, v in first.items()} == {k: v.shape for k, v in expected.items()}
        bound.run(second_batch)
        assert _same_bits(first, expected)
        assert all(v.flags.owndata and v.flags.writeable for v in first.values())
    finally:
        bound.close()
