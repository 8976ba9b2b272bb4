"""Inference backends (OpenVINO, ONNX Runtime) behind one small interface, opened from a verified bundle.

The registry :data:`BACKENDS` is written out here by hand and names modules, not classes: a backend's runtime
is imported only when that backend is opened, and a missing runtime gives an actionable BackendError.
Pipeline use::

    bundle = load_bundle("/var/lib/edge/models/scorer")
    session = open_backend(bundle, backend="openvino", precision="int8", threads=2, cache_dir=cache)
    outputs = session.predict(batch)          # ScorerOutputs(anomaly_map, score)
    raw = session.run(batch)                  # {"anomaly_map": ..., "score": ...} by graph output name

Never imports torch or ``export/``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np
import numpy.typing as npt

from edge.backends.adapters import adapt
from edge.backends.base import DEFAULT_OPTIONS, InferenceSession, PerformanceHint, SessionOptions, check_batch
from edge.backends.memory import ModelBytes
from edge.bundles.loader import Bundle
from edge.bundles.manifest import ModelFormat, Precision
from edge.bundles.outputs import RoleOutputs
from edge.errors import BackendError, BundleError

BACKENDS: dict[str, tuple[str, str, tuple[ModelFormat, ...]]] = {
    # name: (module, class, model formats it opens, preferred first)
    "openvino": ("edge.backends.openvino", "OpenVinoSession", (ModelFormat.OPENVINO, ModelFormat.ONNX)),
    "onnxruntime": ("edge.backends.onnxruntime", "OnnxRuntimeSession", (ModelFormat.ONNX,)),
}


def _unknown(name: str) -> BackendError:
    import difflib

    close = difflib.get_close_matches(name, list(BACKENDS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return BackendError(f"unknown backend {name!r}{hint}; expected one of {', '.join(BACKENDS)}")


def open_model(path: Path | str | ModelBytes, backend: str = "openvino", options: SessionOptions = DEFAULT_OPTIONS,
               ) -> InferenceSession:
    """Open a bare model file (no bundle checks: for the export toolchain and tests), or a model's verified
    bytes (what :func:`open_backend` hands over for a bundle read into memory)."""
    if backend not in BACKENDS:
        raise _unknown(backend)
    module_name, class_name, _ = BACKENDS[backend]
    cls = getattr(importlib.import_module(module_name), class_name)
    session: InferenceSession = cls(path if isinstance(path, ModelBytes) else Path(path), options)
    return session


def model_bytes(bundle: Bundle, fmt: ModelFormat, precision: Precision) -> ModelBytes | None:
    """The verified bytes of the bundle's model at ``fmt``/``precision``, or None for a bundle checked on disk
    only (then the backend opens the file)."""
    if not bundle.files:
        return None
    entry = bundle.model(fmt, precision)
    extra = {PurePosixPath(p).name: bundle.files[p] for p in entry.files if p != entry.path}
    return ModelBytes(PurePosixPath(entry.path).name, bundle.files[entry.path], extra)


class BundleSession:
    """A session bound to its bundle: checks the input contract, returns raw or typed outputs."""

    def __init__(self, bundle: Bundle, session: InferenceSession, precision: Precision) -> None:
        self.bundle = bundle
        self.precision = precision
        self._session = session
        contract = bundle.contract
        self._shape = (contract.tensor_channels, contract.height, contract.width)

    @property
    def input_name(self) -> str:
        return self._session.input_name

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._session.output_names

    def run(self, batch: npt.NDArray[np.float32]) -> Mapping[str, np.ndarray]:
        """Raw outputs by graph name; refuses a batch that does not match the bundle's input contract.

        A good batch is checked once, by the session (``check_batch``); only a batch that fails the quick test
        here is checked in full, so that the error names the bundle.
        """
        if not (isinstance(batch, np.ndarray) and batch.ndim == 4 and batch.dtype == np.float32
                and batch.shape[0] >= 1):
            batch = check_batch(batch, f"bundle {self.bundle.manifest.name}")
        if tuple(batch.shape[1:]) != self._shape:
            raise BundleError(f"bundle {self.bundle.manifest.name}: input contract wants (N, "
                              f"{', '.join(map(str, self._shape))}), got {batch.shape}")
        return self._session.run(batch)

    def predict(self, batch: npt.NDArray[np.float32]) -> RoleOutputs:
        """Typed outputs of the bundle's role, normalisation applied."""
        return adapt(self.bundle.manifest, self.run(batch))

    def close(self) -> None:
        self._session.close()


def open_backend(bundle: Bundle, backend: str = "openvino", precision: Precision | str = Precision.FP32,
                 threads: int = 2, cache_dir: Path | None = None,
                 hint: PerformanceHint | str = PerformanceHint.LATENCY, device: str = "CPU",
                 streams: int = 1) -> BundleSession:
    """Compile the bundle's model for ``backend`` at ``precision``.

    OpenVINO prefers the bundle's IR and falls back to its ONNX file at that precision; ONNX Runtime opens
    ONNX only. A bundle read into memory (``Bundle.files``) is compiled from those verified bytes, never from
    its folder. Raises BundleError when the bundle has no model the backend can open at that precision, and
    BackendError when the runtime is missing or refuses the model.
    """
    if backend not in BACKENDS:
        raise _unknown(backend)
    precision = Precision(precision)
    formats = BACKENDS[backend][2]
    available = {(m.format, m.precision) for m in bundle.manifest.models}
    chosen = next((f for f in formats if (f, precision) in available), None)
    if chosen is None:
        have = ", ".join(sorted(f"{f}/{p}" for f, p in available))
        raise BundleError(f"bundle {bundle.manifest.name}: backend {backend} needs "
                          f"{' or '.join(map(str, formats))} at {precision}; the bundle has {have}")
    options = SessionOptions(threads=threads, hint=PerformanceHint(hint), cache_dir=cache_dir, device=device,
                             streams=streams)
    source = model_bytes(bundle, chosen, precision)
    session = open_model(bundle.model_path(chosen, precision) if source is None else source, backend, options)
    # The session keeps the bytes it runs; the bundle's other files need not stay in memory with it.
    return BundleSession(replace(bundle, files={}) if bundle.files else bundle, session, precision)


__all__ = [
    "BACKENDS",
    "BundleSession",
    "InferenceSession",
    "ModelBytes",
    "PerformanceHint",
    "SessionOptions",
    "adapt",
    "model_bytes",
    "open_backend",
    "open_model",
]
