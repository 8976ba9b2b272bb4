"""The research-code baseline: the same models as a plain sequential PyTorch-eager pipeline.

This is how research code runs the method: numpy conditioning, then torch models called one item at a time,
in one thread of Python control (torch itself uses ``--threads`` intra-op threads), no pipelining, no
compiled runtime. To compare like with like, everything around the models is the service's own code: the
same conditioner and composer (numpy), the same detect/score/localise/finish stage functions, the same audit
sink; only the model sessions are torch modules instead of OpenVINO/ONNX Runtime, and the stages run back to
back on one item before the next item starts.

The torch models are *rebuilt from the bundle's ONNX weights* into the recipes' architectures
(``export.recipes.detector.AgnosticDetector``, ``export.recipes.scorer.StfpmScorer`` / ``ThreatClassifier``): conv
weights by name;
batch norms the exporter folded into a conv (``<conv>.weight_bias``) become identity batch norms carrying that
bias; batch norms it kept are copied; the detector's per-level ``scales`` are read from the graph's scalar
``Mul`` nodes. The rebuilt models are checked against ONNX Runtime on a real item (max |difference| is
recorded), so the baseline is provably the shipped model, whichever checkpoint it came from.

Run (normally spawned by ``benchmarks/bench_pipeline.py``):
    .venv/bin/python benchmarks/eager_pipeline.py --items-dir DIR --n 40 --out eager.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import nn

from edge.backends import open_backend
from edge.backends.adapters import adapt
from edge.bundles.loader import Bundle, load_bundle
from edge.bundles.manifest import ModelFormat, Precision
from edge.bundles.outputs import RoleOutputs
from edge.condition.composer import compose
from edge.condition.conditioner import Conditioner
from edge.condition.flatfield import load_flatfield
from edge.condition.zeff import load_energy_calibration
from edge.config.audit import AuditConfig
from edge.config.condition import PaletteConfig
from edge.records import BoxXyxy
from edge.screening import LoadedModel, ModelHolder, ModelSet
from edge.sinks.audit import AuditStore
from edge.stages.condition import ConditionStage
from edge.stages.decide import DecideStage
from edge.stages.detect import DetectStage
from edge.stages.localise import LocaliseStage
from edge.stages.map import MapStage
from edge.stages.score import ScoreStage
from edge_tools.bench.items import ReplaySource
from edge_tools.bench.roofline import count_flops, measure_peak
from edge_tools.bench.stats import RssSampler, load_average, peak_rss_mb, percentiles, rss_mb
from export.recipes.detector import AgnosticDetector
from export.recipes.fused import RULES, FusedScorer
from export.recipes.refiner import RefinerShape
from export.recipes.scorer import UNCERTAINTIES, Backbone, StfpmScorer, ThreatClassifier, kind_uncertainty


def onnx_path(bundle: Bundle) -> Path:
    model = next(m for m in bundle.manifest.models if m.format == ModelFormat.ONNX)
    return bundle.root / model.path


def onnx_weights(path: Path) -> tuple[dict[str, np.ndarray], list[float]]:
    """Initialisers by name, and the scalar multipliers applied to conv outputs (the detector's ``scales``)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    conv_outputs = {n.output[0] for n in graph.node if n.op_type == "Conv"}
    scales = [float(init[n.input[1]]) for n in graph.node
              if n.op_type == "Mul" and n.input[0] in conv_outputs and n.input[1] in init
              and init[n.input[1]].ndim == 0]
    return init, scales


def load_onnx_weights(model: nn.Module, path: Path, optional: tuple[str, ...] = ()) -> nn.Module:
    """Fill ``model`` (a recipe architecture) from the exported graph; every tensor must be accounted for, except
    the ``optional`` ones, which keep the model's value when the graph has none (the exporter drops an added
    zero)."""
    init, scales = onnx_weights(path)
    state = model.state_dict()
    missing: list[str] = []
    for key, tensor in state.items():
        module, _, leaf = key.rpartition(".")
        if key in init:
            value = torch.from_numpy(np.array(init[key]))
        elif key == "scales":
            value = torch.tensor(scales, dtype=tensor.dtype)
        elif leaf == "num_batches_tracked" or key in optional:
            continue
        elif module.endswith(".1") and f"{module[:-2]}.0.weight_bias" in init:
            # A batch norm folded into the conv before it: identity scale, the folded bias as its shift.
            folded = torch.from_numpy(np.array(init[f"{module[:-2]}.0.weight_bias"]))
            eps = cast(nn.BatchNorm2d, model.get_submodule(module)).eps
            value = {"weight": torch.ones_like(tensor), "bias": folded, "running_mean": torch.zeros_like(tensor),
                     "running_var": torch.full_like(tensor, 1.0 - eps)}[leaf]
        else:
            missing.append(key)
            continue
        if value.shape != tensor.shape:
            raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, the architecture wants "
                             f"{tuple(tensor.shape)}")
        state[key] = value
    if missing:
        raise ValueError(f"{path}: no weights in the graph for {', '.join(missing[:8])}")
    model.load_state_dict(state)
    return model.eval()


def torch_model(bundle: Bundle) -> nn.Module:
    """The bundle's model as a torch module of its recipe's architecture."""
    return torch_model_of_graph(onnx_path(bundle), bundle.manifest.role)


def torch_model_of_graph(path: Path, role: str) -> nn.Module:
    """The model of an exported ONNX graph of a bundle role, as a torch module of its recipe's architecture."""
    init, _ = onnx_weights(path)
    if role == "detector":
        width = int(init["stem.1.0.weight"].shape[0])
        fpn = int(init["lat.0.weight"].shape[0])
        context = "ctx.mix.weight" in init
        refiner = _refiner_shape(path, init) if "refine.fc1.weight" in init else None
        return load_onnx_weights(AgnosticDetector(int(init["stem.0.0.weight"].shape[1]), width, fpn, context,
                                                  refiner), path)
    if "teacher.s1.0.0.weight" in init:
        kinds = int(init["teacher.fc.weight"].shape[0]) if "teacher.fc.weight" in init else 0
        scorer = cast(StfpmScorer, load_onnx_weights(StfpmScorer(Backbone(3, kinds), Backbone(3, 0),
                                                                 topk=_graph_topk(path)), path))
        if kinds:
            scorer.kind_weight = _fit_kind_weight(scorer, path)
        return scorer
    if "stfpm.teacher.s1.0.0.weight" in init:  # export.recipes.fused: STFPM + insert classifier in one graph
        kinds = int(init["stfpm.teacher.fc.weight"].shape[0]) if "stfpm.teacher.fc.weight" in init else 0
        stfpm = StfpmScorer(Backbone(3, kinds), Backbone(3, 0), topk=_graph_topk(path))
        fused = cast(FusedScorer, load_onnx_weights(FusedScorer(stfpm, ThreatClassifier()), path,
                                                    optional=("insert_offset",)))  # 0 with the sum rule
        stfpm.kind_weight = float(fused.kind_weight)
        _match_variant(fused, path)
        return fused
    if "net.fc.weight" in init:
        return load_onnx_weights(ThreatClassifier(), path)
    raise ValueError(f"{path}: no eager rebuild for this architecture")


def _refiner_shape(path: Path, init: Mapping[str, Any]) -> RefinerShape:
    """A refined detector's second stage: top-k from the graph's TopK, the crop from the first fully connected
    layer (64 channels x (crop / 8)^2 inputs), iterations = the graph's GridSample nodes (one crop per pass)."""
    import onnx

    cells = int(init["refine.fc1.weight"].shape[1]) // 64
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    if "TopK" not in ops or "GridSample" not in ops:
        raise ValueError(f"{path}: refiner weights but no TopK/GridSample in the graph: not a refined detector")
    return RefinerShape(_graph_topk(path), round(cells ** 0.5) * 8, ops.count("GridSample"))


def _graph_topk(path: Path) -> int:
    """The K of the graph's first TopK, else 1: a scorer's top-k (score = mean of the k largest map pixels; 1 =
    max), a refined detector's candidate count."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        for attr in node.attribute if node.op_type == "Constant" else ():
            if attr.name == "value":
                constants[node.output[0]] = numpy_helper.to_array(attr.t)
    for node in graph.node:
        if node.op_type == "TopK" and node.input[1] in constants:
            return int(np.asarray(constants[node.input[1]]).ravel()[0])
    return 1


def _probe_map(path: Path) -> tuple[torch.Tensor, np.ndarray]:
    """A fixed probe batch and the graph's anomaly map on it (ONNX Runtime)."""
    import onnxruntime as ort

    probe = np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(probe), np.asarray(session.run(None, {session.get_inputs()[0].name: probe})[0],
                                               dtype=np.float64)


def _match_variant(fused: FusedScorer, path: Path) -> None:
    """A fused graph's rule and kind term (not weights: those are initialisers): the combination whose map
    matches the graph's on the probe batch."""
    x, onnx_map = _probe_map(path)
    errors = {}
    for rule in RULES:
        for mode in UNCERTAINTIES:
            fused.rule, fused.stfpm.uncertainty = rule, mode
            with torch.inference_mode():
                errors[rule, mode] = float(np.abs(fused(x)[0].numpy() - onnx_map).max())
    fused.rule, fused.stfpm.uncertainty = min(errors, key=lambda k: errors[k])


def _fit_kind_weight(scorer: StfpmScorer, path: Path) -> float:
    """The weight of the teacher's kind term on the map (v2.0+ scorers) and which term it is (entropy or energy,
    set on ``scorer``), recovered from the graph's own output: map_onnx = map_without_kind + w x term on every
    pixel, solved by least squares on a probe batch for each term; the term that fits exactly wins."""
    x, onnx_map = _probe_map(path)
    scorer.kind_weight = 0.0
    with torch.inference_mode():
        plain, _ = scorer(x)
        features = scorer.teacher.features(x)
        assert scorer.teacher.fc is not None
        logits = scorer.teacher.fc(features[-1].mean(dim=(2, 3)))
        terms = {mode: kind_uncertainty(logits, mode).numpy().astype(np.float64) for mode in UNCERTAINTIES}
    residual = (onnx_map - plain.numpy()).reshape(len(x), -1)
    fits = {}
    for mode, term in terms.items():
        weight = float((residual * term[:, None]).sum() / (term[:, None] ** 2 * residual.shape[1]).sum())
        fits[mode] = (float(np.abs(residual - weight * term[:, None]).max()), weight)
    scorer.uncertainty = min(fits, key=lambda m: fits[m][0])
    return fits[scorer.uncertainty][1]


class TorchSession:
    """Quacks like ``BundleSession`` (``run``/``predict``/``close``) with a torch module behind it."""

    precision = Precision.FP32

    def __init__(self, bundle: Bundle, module: nn.Module) -> None:
        self.bundle = bundle
        self.module = module
        self.names = [o.name for o in bundle.manifest.outputs]

    def run(self, batch: np.ndarray) -> Mapping[str, np.ndarray]:
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(batch)))
        outputs = out if isinstance(out, tuple) else (out,)
        return {name: t.numpy() for name, t in zip(self.names, outputs, strict=True)}

    def predict(self, batch: np.ndarray) -> RoleOutputs:
        return adapt(self.bundle.manifest, self.run(batch))

    def close(self) -> None:
        return None


def load(path: str) -> tuple[LoadedModel, float]:
    started = time.monotonic()
    bundle = load_bundle(path)
    session = TorchSession(bundle, torch_model(bundle))
    return LoadedModel(bundle, cast(Any, session), "pytorch"), time.monotonic() - started


def warm(model: LoadedModel) -> float:
    c = model.bundle.contract
    started = time.monotonic()
    model.session.run(np.zeros((1, c.tensor_channels, c.height, c.width), np.float32))
    return time.monotonic() - started


def parity(model: LoadedModel, batch: np.ndarray) -> float:
    """Max |eager − ONNX Runtime| over all outputs on ``batch`` (proves the rebuild is the shipped model)."""
    ort = open_backend(model.bundle, "onnxruntime", Precision.FP32, 2, None)
    ref = ort.run(batch)
    ours = model.session.run(batch)
    ort.close()
    return float(max(np.max(np.abs(np.asarray(ours[k]) - np.asarray(ref[k]))) for k in ours))


def micro(model: LoadedModel, role: str, batch: np.ndarray, load_s: float, warm_s: float, peak: float,
          repeats: int) -> dict[str, Any]:
    gflops = count_flops(onnx_path(model.bundle)).gflops
    model.session.run(batch)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.session.run(batch)
        samples.append((time.perf_counter() - started) * 1000.0)
    samples.sort()
    median = samples[len(samples) // 2]
    achieved = gflops * batch.shape[0] / (median / 1000.0)
    ref = model.bundle.model_ref
    return {"role": role, "name": ref.name, "bundle": f"{ref.name}@{ref.version} sha256:{ref.sha256[:12]}",
            "backend": "pytorch-eager", "precision": "fp32",
            "load_s": round(load_s, 3), "warm_s": round(warm_s, 3), "gflops_per_input": round(gflops, 4),
            "batch": int(batch.shape[0]), "infer_median_ms": round(median, 3), "infer_min_ms": round(samples[0], 3),
            "achieved_gflops": round(achieved, 2), "pct_of_peak": round(100.0 * achieved / peak, 1)}


def eager_pass(files: list[Path], stages: tuple[Any, ...]) -> dict[str, Any]:
    """Every item through the stages back to back, one item at a time (the research-code loop)."""
    names = ("condition", "detect", "score", "localise", "decide", "map")
    times: dict[str, list[float]] = {name: [] for name in names}
    item_ms: list[float] = []
    verdicts: dict[str, int] = {}
    objects = 0
    with tempfile.TemporaryDirectory(prefix="eager-audit-") as tmp:
        audit = AuditStore(AuditConfig(directory=Path(tmp)), "bench")
        source = ReplaySource(files)
        sampler = RssSampler()
        sampler.start()
        cpu0, wall0 = time.process_time(), time.monotonic()
        while (raw := source.next_item(1.0)) is not None:
            t_item = time.perf_counter()
            record: Any = raw
            for name, fn in zip(names, stages, strict=True):
                t0 = time.perf_counter()
                record = fn(record)
                times[name].append((time.perf_counter() - t0) * 1000.0)
            audit.publish(record)
            item_ms.append((time.perf_counter() - t_item) * 1000.0)
            verdicts[record.verdict.value] = verdicts.get(record.verdict.value, 0) + 1
            objects += len(record.objects)
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        sampler.stop()
        audit.close(1.0)
    n = len(item_ms)
    return {"items": n, "screened": n - verdicts.get("unscreened", 0), "wall_s": round(wall, 3),
            "items_per_s": round(n / wall, 3), "cpu_ms_per_item": round(1000.0 * cpu / max(n, 1), 2),
            "load_avg": load_average(), "item_latency": asdict(percentiles(item_ms)),
            "stages": {name: asdict(percentiles(v)) for name, v in times.items()}, "verdicts": verdicts,
            "objects_per_item": round(objects / max(n, 1), 2), "rss_max_mb": sampler.max_mb}


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    load_start = load_average()
    rss_before = rss_mb()
    items_dir = Path(args.items_dir)
    files = [items_dir / f"{i:06d}.npz" for i in range(args.n)]
    conditioner = Conditioner(load_flatfield(items_dir / "flatfield.npz"),
                              load_energy_calibration(items_dir / "energy.yaml"), PaletteConfig())
    started = time.monotonic()
    detector, det_load = load(args.detector)
    scorer, sc_load = load(args.scorer) if args.scorer else (None, 0.0)
    det_warm = warm(detector)
    sc_warm = warm(scorer) if scorer is not None else 0.0
    models_load_s = time.monotonic() - started
    holder = ModelHolder(ModelSet(detector, scorer))
    condition, detect = ConditionStage(conditioner), DetectStage(holder, args.max_objects)
    score, localise, decide = ScoreStage(holder, args.scorer_batch), LocaliseStage(), DecideStage()
    passes = [eager_pass(files, (condition, detect, score, localise, decide, MapStage(None)))
              for _ in range(args.runs)]
    best = max(passes, key=lambda p: p["items_per_s"])
    # Model-alone figures and parity, on the first item's real inputs.
    first = ReplaySource(files[:1]).next_item(1.0)
    assert first is not None
    conditioned = condition(first)
    det_in = compose(conditioned.image, detector.bundle.contract)
    peak = max(args.peak_gflops, measure_peak(args.threads).gflops)
    models = [micro(detector, "detector", det_in, det_load, det_warm, peak, args.repeats)]
    checks = {"detector_max_abs_vs_onnxruntime": parity(detector, det_in)}
    if scorer is not None:
        boxes = [d.box for d in detect(conditioned).detections] or [BoxXyxy(10, 10, 200, 200)]
        crops = compose(conditioned.image, scorer.bundle.contract,
                        [boxes[i % len(boxes)] for i in range(args.scorer_batch)])
        models.append(micro(scorer, "scorer", crops, sc_load, sc_warm, peak, args.repeats))
        checks["scorer_max_abs_vs_onnxruntime"] = parity(scorer, crops)
    return {
        "label": "pytorch-eager", "scorer_batch": args.scorer_batch, "threads": args.threads,
        "torch": torch.__version__, "models": models, "models_load_s": round(models_load_s, 3),
        "parity": checks, "peak_gflops": peak,
        "throughput": {k: best[k] for k in ("items", "screened", "wall_s", "items_per_s", "cpu_ms_per_item",
                                            "load_avg")},
        "throughput_runs_items_per_s": [p["items_per_s"] for p in passes],
        "item_latency": best["item_latency"], "stages": best["stages"], "verdicts": best["verdicts"],
        "objects_per_item": best["objects_per_item"], "rss_steady_max_mb": max(p["rss_max_mb"] for p in passes),
        "rss_before_models_mb": round(rss_before, 1),
        "rss_peak_mb": round(peak_rss_mb(), 1), "load_avg_start": load_start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items-dir", required=True, help="items rendered by edge_tools.bench.items.prepare_items")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--detector", default="models/detector-agnostic")
    parser.add_argument("--scorer", default="models/scorer-stfpm")
    parser.add_argument("--scorer-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-objects", type=int, default=32)
    parser.add_argument("--peak-gflops", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=20, help="model-alone timing repeats")
    parser.add_argument("--runs", type=int, default=2, help="passes over the items (best is reported)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.write_text(json.dumps(run(args), indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
