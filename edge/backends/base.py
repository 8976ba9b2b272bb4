"""The inference port every backend implements, and the options they share.

Sits between :mod:`edge.bundles` (which says which file to open) and the pipeline's detect/score stages (which
hand over composed NCHW batches). Implementations do not inherit from :class:`InferenceSession`; the
conformance tests run each through the same cases. Nothing here imports a runtime or torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge.errors import BackendError


class PerformanceHint(StrEnum):
    """LATENCY for one item at a time (the box's normal case); THROUGHPUT for big offline batches."""

    LATENCY = "latency"
    THROUGHPUT = "throughput"


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """How to compile and run a model.

    Attributes:
        threads: CPU threads for inference (INFERENCE_NUM_THREADS / intra-op threads); 0 = runtime default.
        hint: OpenVINO PERFORMANCE_HINT; ONNX Runtime ignores it.
        cache_dir: OpenVINO compiled-model cache (cold compile ~0.3 s, warm ~0.03 s); None = no cache.
            Never the current directory by default.
        device: OpenVINO device name (CPU); ONNX Runtime always uses its CPU provider.
        streams: calls the model must serve at the same time (the pipeline's item workers). OpenVINO runs the
            requests of one CPU stream one after another, and the latency hint makes a single stream, so two
            workers calling one model would queue behind each other: with ``streams`` > 1 the model gets that many
            streams of ``threads`` threads each. ONNX Runtime runs concurrent calls on their callers' threads
            already and ignores it.
    """

    threads: int = 2
    hint: PerformanceHint = PerformanceHint.LATENCY
    cache_dir: Path | None = None
    device: str = "CPU"
    streams: int = 1

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.streams < 1:
            raise ValueError(f"streams must be >= 1, got {self.streams}")


class InferenceSession(Protocol):
    """A compiled model that maps one NCHW float32 batch to its outputs by graph output name."""

    @property
    def input_name(self) -> str: ...

    @property
    def output_names(self) -> tuple[str, ...]: ...

    def run(self, batch: npt.NDArray[np.float32]) -> Mapping[str, np.ndarray]:
        """Run a batch (N, C, H, W); returns freshly allocated arrays, one per output, keyed by name."""
        ...

    def close(self) -> None:
        """Release the compiled model; further ``run`` calls raise BackendError."""
        ...


def check_batch(batch: np.ndarray, where: str) -> npt.NDArray[np.float32]:
    """Refuse anything but a 4-D float32 batch with at least one item, before the runtime sees it."""
    if not isinstance(batch, np.ndarray):
        raise BackendError(f"{where}: expected a numpy array, got {type(batch).__name__}")
    if batch.ndim != 4 or batch.shape[0] < 1:
        raise BackendError(f"{where}: expected an (N, C, H, W) batch with N >= 1, got shape {batch.shape}")
    if batch.dtype != np.float32:
        raise BackendError(f"{where}: expected float32 input, got {batch.dtype}")
    return np.ascontiguousarray(batch)


DEFAULT_OPTIONS = SessionOptions()
"""2 threads, latency hint, no compile cache."""
