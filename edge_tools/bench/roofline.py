"""Roofline column: each model's arithmetic (conv/matmul MACs from its ONNX graph) against the machine's peak.

Where it sits: the bench runner counts a bundle's FLOPs once and divides by the measured inference time; the
peak is a large fp32 matmul on OpenVINO with the same thread count the service uses. ``pct_of_peak`` then says
how close a model runs to what the cores can do (small convolutions on 2 cores rarely pass 30-50%).

Counting: shapes come from ONNX shape inference with the batch axis pinned to 1. Conv: N·Cout·Hout·Wout ·
(Cin/groups)·kh·kw MACs; MatMul/Gemm: output elements · inner dimension. FLOPs = 2·MACs. Element-wise ops,
pooling and resizes are not counted (they are memory-bound and small here); an INT8 model is counted as the
same graph (same MACs), measured against the fp32 peak, so its percentage can exceed what fp32 could reach.

Must not: import torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, slots=True)
class ModelFlops:
    """Multiply-accumulates of one forward pass at batch 1, by op type."""

    conv_macs: int
    matmul_macs: int

    @property
    def gflops(self) -> float:
        """Giga floating-point operations per batch-1 inference (2 per MAC)."""
        return 2.0 * (self.conv_macs + self.matmul_macs) / 1e9


def _dims(value: object) -> list[int] | None:
    shape = value.type.tensor_type.shape  # type: ignore[attr-defined]
    dims = [int(d.dim_value) if d.HasField("dim_value") else -1 for d in shape.dim]
    return dims if dims and all(d > 0 for d in dims) else None


def count_flops(onnx_path: Path) -> ModelFlops:
    """Conv and MatMul/Gemm MACs of the graph at batch 1 (``onnx`` package; shape inference, no execution)."""
    import onnx

    model = onnx.load(str(onnx_path))
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    del model.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = _dims(value)
        if dims is not None:
            shapes[value.name] = dims
    for init in inferred.graph.initializer:
        shapes[init.name] = [int(d) for d in init.dims]
    conv = matmul = 0
    for node in inferred.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if out is None:
            continue
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in shapes:
            weight = shapes[node.input[1]]  # (Cout, Cin/groups, kh, kw)
            conv += int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("MatMul", "Gemm") and node.input[0] in shapes:
            a = shapes[node.input[0]]
            trans_a = any(att.name == "transA" and att.i for att in node.attribute)
            inner = a[-2] if trans_a and len(a) >= 2 else a[-1]
            matmul += int(np.prod(out)) * inner
    return ModelFlops(conv, matmul)


@dataclass(frozen=True, slots=True)
class Peak:
    """Measured fp32 matmul throughput of this machine at ``threads`` threads (best of ``repeats``)."""

    gflops: float
    threads: int
    size: int
    repeats: int
    median_gflops: float


def measure_peak(threads: int = 2, size: int = 1024, repeats: int = 20) -> Peak:
    """A ``size``² fp32 matmul on OpenVINO CPU: the best run approximates the cores' attainable peak (the
    median shows how much the shared machine took away)."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    a = ops.parameter([size, size], np.float32, name="a")
    b = ops.constant(rng.standard_normal((size, size)).astype(np.float32))
    model = ov.Model([ops.matmul(a, b, False, False)], [a], "peak")
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                      "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    x = rng.standard_normal((size, size)).astype(np.float32)
    request.infer({0: x})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        request.infer({0: x})
        times.append(time.perf_counter() - started)
    flops = 2.0 * size ** 3
    times.sort()
    return Peak(round(flops / times[0] / 1e9, 1), threads, size, repeats,
                round(flops / times[len(times) // 2] / 1e9, 1))
