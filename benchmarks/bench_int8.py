"""INT8 vs FP32 under OpenVINO for a ResNet-18-sized model at 256x256 on 2 threads, through the real bundle path.

Target (issue 5): INT8 at least 2.5x faster than FP32, decision agreement >= 99 % on the validation set.
Steps: build a plain-torch ResNet-18 classifier (hlz input, 2 classes), train it briefly from scratch on
synthetic "blob / no blob" textures (so that decisions mean something), export → OpenVINO FP32 → NNCF INT8
(accuracy-guarded) → verify → bundle, then time ``open_backend(bundle, "openvino", fp32|int8, threads=2)``.
Writes ``benchmarks/results/bench_int8.json``.
Run: ``.venv/bin/python benchmarks/bench_int8.py`` (~3 min on idle cores; training dominates).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.backends import open_backend  # noqa: E402
from edge.bundles import ModelFormat, Precision, Role  # noqa: E402
from edge.contracts import Channel, InputContract  # noqa: E402
from export.bundle import BundleModel, make_bundle  # noqa: E402
from export.calibration import InputSet  # noqa: E402
from export.meta import ExportMeta, default_outputs  # noqa: E402
from export.onnx_to_openvino import convert_to_openvino  # noqa: E402
from export.parity import Candidate, run_batched, verify  # noqa: E402
from export.quantize import Metric, quantize  # noqa: E402
from export.tiny_models import resnet18_classifier  # noqa: E402
from export.torch_to_onnx import export_onnx, run_torch  # noqa: E402

SIZE = 256


def synthetic(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random textures; label 1 items carry a dense blob (high attenuation, high Z) somewhere."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    x = np.empty((n, 3, size, size), np.float32)
    labels = (rng.random(n) < 0.5).astype(np.int64)
    for i in range(n):
        fx, fy, ph = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6.28)
        base = 0.6 + 0.25 * np.sin(fx * 6.28 * xx + ph) * np.cos(fy * 6.28 * yy)
        h = np.clip(base + rng.normal(0, 0.05, (size, size)), 0, 1).astype(np.float32)
        z = np.full((size, size), 0.25, np.float32) + rng.normal(0, 0.03, (size, size)).astype(np.float32)
        if labels[i]:
            cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.12)
            blob = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
            h[blob] *= 0.35
            z[blob] = 0.85
        x[i] = (h, np.clip(h * 0.9, 0, 1), z)
    return x, labels


def train(model: torch.nn.Module, rng: np.random.Generator, steps: int = 60) -> float:
    """A short from-scratch training at 128x128 (the network is fully convolutional + global pooling)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        x, y = synthetic(16, 128, rng)
        probs = model(torch.from_numpy(x))
        loss = torch.nn.functional.nll_loss(torch.log(probs + 1e-8), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def median_ms(session: object, x: np.ndarray, reps: int) -> float:
    run = session.run  # type: ignore[attr-defined]
    for _ in range(5):
        run(x)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    t0 = time.monotonic()
    model = resnet18_classifier(in_channels=3, num_classes=2)
    params = sum(p.numel() for p in model.parameters())
    loss = train(model, rng)
    contract = InputContract(channels=(Channel.HLZ,), height=SIZE, width=SIZE)
    meta = ExportMeta(role=Role.CLASSIFIER, contract=contract, outputs=default_outputs(Role.CLASSIFIER),
                      classes=("clear", "threat"))
    calib_x, _ = synthetic(128, SIZE, rng)
    val_x, val_y = synthetic(200, SIZE, rng)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("exporting …", flush=True)
        meta = export_onnx(model, meta, work / "r18.onnx")
        convert_to_openvino(work / "r18.onnx", work / "r18_fp32.xml", Precision.FP32)
        q = quantize(work / "r18_fp32.xml", InputSet(calib_x, None, "synthetic calibration"),
                     InputSet(val_x, val_y, "synthetic validation"), work / "r18_int8.xml",
                     Metric.AGREEMENT, max_drop=0.01, subset_size=128, threads=2, progress=print)
        ref = run_batched(lambda b: run_torch(model, b, meta.output_names), val_x)
        report = verify(meta, val_x, ref, "pytorch", [Candidate("openvino", Precision.FP32, work / "r18_fp32.xml"),
                                                      Candidate("openvino", Precision.INT8, work / "r18_int8.xml")],
                        progress=print)
        bundle = make_bundle(work / "bundle", "resnet18-bench", "1", meta,
                             [BundleModel(ModelFormat.OPENVINO, Precision.FP32, work / "r18_fp32.xml"),
                              BundleModel(ModelFormat.OPENVINO, Precision.INT8, work / "r18_int8.xml")], report)
        results: dict[str, object] = {}
        for batch, reps in ((1, 60), (8, 15)):
            x = val_x[:batch]
            ms = {}
            for precision in ("fp32", "int8"):
                session = open_backend(bundle, "openvino", precision=precision, threads=2, cache_dir=work / "cache")
                ms[precision] = median_ms(session, x, reps)
                session.close()
            results[f"batch{batch}"] = {"fp32_ms": ms["fp32"], "int8_ms": ms["int8"],
                                        "speedup": ms["fp32"] / ms["int8"]}
            print(f"batch {batch}: fp32 {ms['fp32']:.1f} ms, int8 {ms['int8']:.1f} ms, "
                  f"x{ms['fp32'] / ms['int8']:.2f}", flush=True)
        fp32_out = open_backend(bundle, "openvino", precision="fp32").predict(val_x)
        int8_out = open_backend(bundle, "openvino", precision="int8").predict(val_x)
        fp32_dec = fp32_out.probs.argmax(1)  # type: ignore[union-attr]
        int8_dec = int8_out.probs.argmax(1)  # type: ignore[union-attr]
        agreement = float(np.mean(fp32_dec == int8_dec))
    speedup = results["batch1"]["speedup"]  # type: ignore[index]
    summary = {
        "benchmark": "bench_int8", "model": "ResNet-18 classifier (plain torch)", "params": params,
        "input": f"3x{SIZE}x{SIZE}", "threads": 2, "train_loss": loss,
        "quantize": {"metric": str(q.metric), "fp32": q.fp32_value, "int8": q.int8_value, "seconds": q.seconds},
        "validation_items": len(val_x), "decision_agreement": agreement,
        "accuracy_fp32": float(np.mean(fp32_dec == val_y)), "accuracy_int8": float(np.mean(int8_dec == val_y)),
        "timings": results,
        "target": {"speedup_min": 2.5, "agreement_min": 0.99},
        "passed": bool(speedup >= 2.5 and agreement >= 0.99),
        "wall_seconds": time.monotonic() - t0,
    }
    out = REPO / "benchmarks" / "results" / "bench_int8.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
