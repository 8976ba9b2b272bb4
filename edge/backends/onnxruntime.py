"""ONNX Runtime inference session on the CPU execution provider.

Imports ``onnxruntime`` here and only here. ``SessionOptions.cache_dir`` and ``hint`` do not apply to ONNX
Runtime and are ignored. Opens a path (the export toolchain's bare files) or
:class:`~edge.backends.memory.ModelBytes` (the runtime's verified bundle bytes, parsed from memory so the bundle
folder is never read again). Translates ONNX Runtime exceptions into :class:`~edge.errors.BackendError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.backends.base import DEFAULT_OPTIONS, SessionOptions, check_batch
from edge.backends.memory import ModelBytes, onnx_bytes
from edge.errors import BackendError

try:
    import onnxruntime as ort
except ImportError as _exc:  # pragma: no cover - exercised only on a box without onnxruntime
    ort = None
    _IMPORT_ERROR: ImportError | None = _exc
else:
    _IMPORT_ERROR = None


def _require_onnxruntime() -> None:
    if ort is None:
        raise BackendError(f"the onnxruntime backend needs the 'onnxruntime' package ({_IMPORT_ERROR}); "
                           "install it with `pip install 'onnxruntime>=1.20'` or choose backend openvino")


class OnnxRuntimeSession:
    """An ``InferenceSession`` over ``onnxruntime.InferenceSession`` (thread-safe ``run`` per ORT docs)."""

    def __init__(self, model_path: Path | ModelBytes, options: SessionOptions = DEFAULT_OPTIONS) -> None:
        _require_onnxruntime()
        assert ort is not None
        self._where = f"onnxruntime:{model_path.name}"
        if Path(model_path.name).suffix != ".onnx":
            raise BackendError(f"{self._where}: onnxruntime opens .onnx files only")
        so = ort.SessionOptions()
        if options.threads > 0:
            so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            model: str | bytes = str(model_path) if isinstance(model_path, Path) else onnx_bytes(model_path)
            self._session: ort.InferenceSession | None = ort.InferenceSession(
                model, sess_options=so, providers=["CPUExecutionProvider"])
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"{self._where}: cannot load model: {exc}") from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise BackendError(f"{self._where}: expected one input, the model has {len(inputs)}")
        self._input_name: str = inputs[0].name
        self._output_names = tuple(str(o.name) for o in self._session.get_outputs())

    @property
    def input_name(self) -> str:
        return self._input_name

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    def run(self, batch: npt.NDArray[np.float32]) -> Mapping[str, np.ndarray]:
        batch = check_batch(batch, self._where)
        session = self._session
        if session is None:
            raise BackendError(f"{self._where}: session is closed")
        try:
            values = session.run(list(self._output_names), {self._input_name: batch})
        except Exception as exc:
            raise BackendError(f"{self._where}: inference failed for batch {batch.shape}: {exc}") from exc
        return {name: np.asarray(v) for name, v in zip(self._output_names, values, strict=True)}

    def close(self) -> None:
        self._session = None
