"""OpenVINO inference session (IR ``.xml`` or ``.onnx``), the box's default backend.

Imports ``openvino`` here and only here, so the registry can name this backend without loading it.
Opens a path (the export toolchain's bare model files) or :class:`~edge.backends.memory.ModelBytes` (the runtime's
verified bundle bytes): from bytes, the IR weights are wrapped in an ``ov.Tensor`` over memory this session keeps
alive, so OpenVINO never memory-maps the bundle's ``.bin`` (a file overwritten under a mapped model changed every
score; a truncated one raised SIGBUS). The compiled-model cache works the same for both: OpenVINO keys it by a
hash of the model. Sets ``INFERENCE_PRECISION_HINT=f32`` explicitly: on CPUs with BF16 support OpenVINO
otherwise silently runs FP32 models in bfloat16, which breaks the parity the bundle was verified with. Translates
OpenVINO exceptions into :class:`~edge.errors.BackendError`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.backends.base import DEFAULT_OPTIONS, PerformanceHint, SessionOptions, check_batch
from edge.backends.memory import ModelBytes, onnx_bytes
from edge.errors import BackendError

try:
    import openvino as ov
except ImportError as _exc:  # pragma: no cover - exercised only on a box without openvino
    ov = None
    _IMPORT_ERROR: ImportError | None = _exc
else:
    _IMPORT_ERROR = None


def _require_openvino() -> None:
    if ov is None:
        raise BackendError(f"the openvino backend needs the 'openvino' package ({_IMPORT_ERROR}); "
                           "install it with `pip install 'openvino>=2025.0'` or choose backend onnxruntime")


class OpenVinoSession:
    """One compiled model; each calling thread gets its own infer request, so the pipeline's item workers can
    run the same model at once (one shared request would hand one thread the other's tensors), on as many CPU
    streams as ``options.streams`` asks for (one stream would run them in turn). ``close`` waits for running
    calls."""

    def __init__(self, model_path: Path | ModelBytes, options: SessionOptions = DEFAULT_OPTIONS) -> None:
        _require_openvino()
        assert ov is not None
        self._where = f"openvino:{model_path.name}"
        # The bytes a model read from memory may point into: kept for as long as the compiled model lives.
        self._keep: tuple[object, ...] = ()
        try:
            core = ov.Core()
            if options.cache_dir is not None:
                options.cache_dir.mkdir(parents=True, exist_ok=True)
                core.set_property({"CACHE_DIR": str(options.cache_dir)})
            config: dict[str, object] = {
                "PERFORMANCE_HINT": "LATENCY" if options.hint is PerformanceHint.LATENCY else "THROUGHPUT",
                "INFERENCE_PRECISION_HINT": "f32",
            }
            streams = options.streams if options.device == "CPU" else 1
            if options.threads > 0:
                config["INFERENCE_NUM_THREADS"] = options.threads * streams
            if streams > 1:
                # The latency hint pins one stream whatever NUM_STREAMS says; the throughput hint honours it.
                # Measured for CPU per call (docs/performance.md, "OpenVINO session settings"): with one thread
                # a stream, no other CPU property (pinning, hyper-threading, core type, TBB partitioner, no
                # hint, a single-stream copy per caller) lowers it with two callers; a second thread a stream
                # brings in a TBB worker that busy-waits after each call (+15-55% CPU per call).
                config["PERFORMANCE_HINT"] = "THROUGHPUT"
                config["NUM_STREAMS"] = streams
            model = self._read(core, model_path)
            if len(model.inputs) != 1:
                raise BackendError(f"{self._where}: expected one input, the model has {len(model.inputs)}")
            self._compiled = core.compile_model(model, options.device, config)
        except BackendError:
            raise
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with C++ messages
            raise BackendError(f"{self._where}: cannot load model: {exc}") from exc
        self._input_name = self._compiled.inputs[0].get_any_name()
        self._output_names = tuple(o.get_any_name() for o in self._compiled.outputs)
        self._local = threading.local()
        self._requests: list[object] = []
        self._idle = threading.Condition()
        self._running = 0
        self._closed = False

    def _read(self, core: ov.Core, source: Path | ModelBytes) -> ov.Model:
        """Parse the model from a file, or from verified bytes without touching the disk."""
        if isinstance(source, Path):
            return core.read_model(str(source))
        if source.suffix == ".xml":
            weights = np.frombuffer(source.weights(), np.uint8)
            self._keep = (source, weights)
            return core.read_model(model=source.main, weights=ov.Tensor(weights))
        graph = onnx_bytes(source)
        self._keep = (graph,)
        return core.read_model(model=graph)

    @property
    def input_name(self) -> str:
        return self._input_name

    @property
    def streams(self) -> int:
        """CPU streams the compiled model runs: how many calls it serves at the same time."""
        return int(self._compiled.get_property("NUM_STREAMS"))

    @property
    def output_names(self) -> tuple[str, ...]:
        return self._output_names

    def _thread_request(self) -> ov.InferRequest:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._compiled.create_infer_request()
            self._local.request = request
            self._requests.append(request)
        return request

    def run(self, batch: npt.NDArray[np.float32]) -> Mapping[str, np.ndarray]:
        batch = check_batch(batch, self._where)
        with self._idle:
            if self._closed:
                raise BackendError(f"{self._where}: session is closed")
            self._running += 1
            request = self._thread_request()
        try:
            # The batch goes in as a Tensor over the caller's memory (OpenVINO will not wrap a read-only array:
            # that one is copied), and ``infer`` hands the outputs back already copied into fresh arrays the
            # caller owns (the request reuses its output memory on the next call), in the compiled model's
            # output order. The dict form, ``infer({name: batch})`` then a copy of each output, copied the
            # batch into the request and the outputs twice: ~0.3 ms more process CPU per detector call and
            # ~0.15 ms per classifier call, for the same bits (docs/performance.md, "OpenVINO session
            # settings"). It also reshaped the request's own tensor to any height and width; a Tensor off the
            # IR's declared input shape is refused (a BackendError).
            tensor = ov.Tensor(batch, shared_memory=batch.flags.writeable)
            outputs = request.infer(tensor).to_tuple()
            # The request points at the batch's memory until this thread's next call: holding the Tensor (which
            # holds the array) until then keeps that memory alive.
            self._local.input = tensor
            return dict(zip(self._output_names, outputs, strict=True))
        except Exception as exc:
            raise BackendError(f"{self._where}: inference failed for batch {batch.shape}: {exc}") from exc
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def close(self) -> None:
        with self._idle:
            if not hasattr(self, "_compiled"):
                return  # closed already: a second close is a no-op (it raised AttributeError)
            self._closed = True
            self._idle.wait_for(lambda: self._running == 0, timeout=30.0)
            self._requests.clear()
            self._local = threading.local()
            del self._compiled
            self._keep = ()
