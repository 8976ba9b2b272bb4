"""OpenVINO session levers: process CPU ms per inference call of the reference pipeline's two INT8 models.

Why: issue 30 item 7 counts process CPU per item (``time.process_time``: every thread, OpenVINO's own included),
and the two models are a third of it. Each lever here is an OpenVINO compile setting for the item workers'
two streams, or a way of handing a batch to a request and taking the outputs back.

Inputs are real: the batches the reference pipeline (``detector-agnostic`` + ``classifier-threat``, OpenVINO INT8,
one thread, two item workers, scorer batch 8) hands each model while it screens ``--items`` rendered
virtual-scanner items (the detector one 320x320 image per call; the classifier 64x64 crops in calls of 8 then
the rest). Every arm of a model lives in the same process and the arms take turns, block by block (``--seconds``
each, ``--rounds`` rounds, order reversed every round), so that all see the same load on shared cores; a block
loops over the recorded batches in one thread, or in two threads at once (each with its own request, as the
item workers). Figures: median over rounds of process CPU ms per call, and of wall ms per call per thread.

"same bits": every output of every recorded batch, run alone and from two threads at once, equals (bitwise) a
fresh default-configuration single-stream compile fed through the dict dispatcher.

    .venv/bin/python benchmarks/bench_openvino_session.py --rounds 8
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from edge.backends.base import SessionOptions
from edge.backends.openvino import OpenVinoSession

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"detector": ROOT / "models/detector-agnostic/openvino_int8/detector-agnostic_int8.xml",
          "classifier": ROOT / "models/classifier-threat/openvino_int8/classifier-threat_int8.xml"}
F32 = {"INFERENCE_PRECISION_HINT": "f32"}
# What the session compiled for threads=1, streams=2 before and after this work (unchanged).
STREAMS2 = {**F32, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2, "INFERENCE_NUM_THREADS": 2}
LATENCY1 = {**F32, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": 1}
Outputs = list[np.ndarray]


def record(items_dir: Path, count: int) -> dict[str, list[np.ndarray]]:
    """The batches each model gets while the reference pipeline screens ``count`` items (one throughput pass)."""
    from edge.screening import ModelHolder, ModelSet
    from edge_tools.bench import runner

    if not (items_dir / "flatfield.npz").is_file():
        from edge_tools.bench.items import prepare_items
        prepare_items(items_dir, count, progress=True)
    files = tuple(str(items_dir / f"{i:06d}.npz") for i in range(count))
    detector, classifier = str(ROOT / "models/detector-agnostic"), str(ROOT / "models/classifier-threat")
    spec = runner.RunSpec(backend="openvino", precision="int8", scorer_batch=8, threads=1,
                          detector=detector, scorer=classifier, items=files,
                          flatfield=str(items_dir / "flatfield.npz"), energy=str(items_dir / "energy.yaml"),
                          peak_gflops=1.0, workers=2)
    seen: dict[str, list[np.ndarray]] = {"detector": [], "classifier": []}
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="bench-ov-") as tmp:
        cfg = runner.bench_config(spec, Path(tmp))
        models = {role: runner.open_model(path, "openvino", "int8", 1, 2)[0]
                  for role, path in (("detector", detector), ("classifier", classifier))}
        for role, model in models.items():
            inner = model.session._session
            run = inner.run

            def recording(batch: np.ndarray, run: Callable[..., Any] = run, role: str = role) -> Any:
                with lock:
                    seen[role].append(np.array(batch, copy=True))
                return run(batch)
            inner.run = recording  # type: ignore[method-assign]
        runner.run_pass(cfg, ModelHolder(ModelSet(models["detector"], models["classifier"])), spec, None)
        for model in models.values():
            model.session.close()
    return seen


@dataclass
class Arm:
    """One way of running a model: compile ``config`` (``copies`` times: caller k uses copy k) and call it by
    ``dispatch``. ``slots`` are the two callers' requests, made once, as the item workers' thread requests."""

    name: str
    config: dict[str, object] = field(default_factory=lambda: dict(STREAMS2))
    dispatch: str = "dict"
    copies: int = 1
    static: bool = False
    _run: Callable[[np.ndarray, int], Outputs] | None = None

    def open(self, path: Path) -> None:
        if self.dispatch == "session":  # the edge session itself, as the service opens it
            session = OpenVinoSession(path, SessionOptions(threads=1, streams=2))
            self._run = lambda batch, slot: list(session.run(batch).values())
            return
        core = ov.Core()
        model = core.read_model(str(path))
        compiled = [core.compile_model(model, "CPU", self.config) for _ in range(self.copies)]
        slots = [compiled[k % self.copies].create_infer_request() for k in range(2)]
        outputs = compiled[0].outputs
        if self.static:
            self._run = self._static(core, model, slots)
        elif self.dispatch == "dict":
            def run_dict(batch: np.ndarray, slot: int) -> Outputs:
                slots[slot].infer({0: batch})
                return [np.array(slots[slot].get_tensor(o).data, copy=True) for o in outputs]
            self._run = run_dict
        elif self.dispatch == "tensor":
            self._run = lambda batch, slot: list(slots[slot].infer(ov.Tensor(batch, shared_memory=True)).to_tuple())
        elif self.dispatch == "set-infer":
            def run_set(batch: np.ndarray, slot: int) -> Outputs:
                slots[slot].set_input_tensor(ov.Tensor(batch, shared_memory=True))
                slots[slot].infer(share_outputs=True)
                return [np.array(slots[slot].get_output_tensor(i).data, copy=True) for i in range(len(outputs))]
            self._run = run_set
        elif self.dispatch == "async":
            def run_async(batch: np.ndarray, slot: int) -> Outputs:
                slots[slot].start_async(ov.Tensor(batch, shared_memory=True))
                slots[slot].wait()
                return [np.array(slots[slot].get_tensor(o).data, copy=True) for o in outputs]
            self._run = run_async
        elif self.dispatch == "queue":
            self._run = self._queue(compiled[0])
        else:
            raise ValueError(self.dispatch)

    def _static(self, core: ov.Core, model: ov.Model, slots: list[ov.InferRequest]
                ) -> Callable[[np.ndarray, int], Outputs]:
        """The model reshaped to each batch size it meets (compiled on first sight, not counted: warm-up)."""
        by_size: dict[tuple[int, int], ov.InferRequest] = {}
        compiled: dict[int, ov.CompiledModel] = {}
        lock = threading.Lock()

        def run(batch: np.ndarray, slot: int) -> Outputs:
            key = (batch.shape[0], slot)
            request = by_size.get(key)
            if request is None:
                with lock:
                    if batch.shape[0] not in compiled:
                        fixed = model.clone()
                        fixed.reshape({0: list(batch.shape)})
                        compiled[batch.shape[0]] = core.compile_model(fixed, "CPU", self.config)
                    request = by_size[key] = compiled[batch.shape[0]].create_infer_request()
            return list(request.infer(ov.Tensor(batch, shared_memory=True)).to_tuple())
        return run

    @staticmethod
    def _queue(compiled: ov.CompiledModel) -> Callable[[np.ndarray, int], Outputs]:
        """An AsyncInferQueue of two jobs shared by the callers; a caller waits for its own job's callback.
        ``start_async`` is guarded: from two threads at once it hands both the same idle request (busy)."""
        queue = ov.AsyncInferQueue(compiled, 2)
        lock = threading.Lock()

        def done(request: ov.InferRequest, box: list[Any]) -> None:
            box.append([np.array(request.get_tensor(o).data, copy=True) for o in compiled.outputs])
            box[0].set()
        queue.set_callback(done)

        def run(batch: np.ndarray, slot: int) -> Outputs:
            box: list[Any] = [threading.Event()]
            with lock:
                queue.start_async(ov.Tensor(batch, shared_memory=True), box)
            box[0].wait()
            outputs: Outputs = box[1]
            return outputs
        return run

    def run(self, batch: np.ndarray, slot: int = 0) -> Outputs:
        assert self._run is not None
        return self._run(batch, slot)


ARMS = [
    Arm("before: THROUGHPUT, 2 streams x 1 thread, dict dispatcher"),
    Arm("after: the session (shared input Tensor, owned output copies)", dispatch="session"),
    Arm("ENABLE_CPU_PINNING=False", {**STREAMS2, "ENABLE_CPU_PINNING": False}, "tensor"),
    Arm("ENABLE_HYPER_THREADING=False", {**STREAMS2, "ENABLE_HYPER_THREADING": False}, "tensor"),
    Arm("SCHEDULING_CORE_TYPE=PCORE_ONLY", {**STREAMS2, "SCHEDULING_CORE_TYPE": "PCORE_ONLY"}, "tensor"),
    Arm("TBB_PARTITIONER=AUTO (default STATIC)", {**STREAMS2, "TBB_PARTITIONER": "AUTO"}, "tensor"),
    Arm("no PERFORMANCE_HINT, 2 streams x 1 thread",
        {k: v for k, v in STREAMS2.items() if k != "PERFORMANCE_HINT"}, "tensor"),
    Arm("LATENCY, 1 stream x 1 thread, shared by both callers", dict(LATENCY1), "tensor"),
    Arm("LATENCY, 1 stream x 1 thread, one compiled copy per caller", dict(LATENCY1), "tensor", copies=2),
    Arm("LATENCY, 1 stream x 1 thread, one unpinned compiled copy per caller",
        {**LATENCY1, "ENABLE_CPU_PINNING": False}, "tensor", copies=2),
    Arm("LATENCY, 1 stream x 2 threads (TBB worker)", {**LATENCY1, "INFERENCE_NUM_THREADS": 2}, "tensor"),
    Arm("set_input_tensor + infer() + copy of output views", dispatch="set-infer"),
    Arm("start_async + wait (per-caller request)", dispatch="async"),
    Arm("AsyncInferQueue(2) shared by the callers", dispatch="queue"),
    Arm("static shapes: reshaped per batch size", dispatch="tensor", static=True),
]


def digest(outputs: list[Outputs]) -> str:
    h = hashlib.sha256()
    for call in outputs:
        for a in call:
            h.update(repr((a.dtype.str, a.shape)).encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:12]


def reference(path: Path, batches: list[np.ndarray]) -> str:
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", F32)
    request = compiled.create_infer_request()
    out = []
    for batch in batches:
        request.infer({0: batch})
        out.append([np.array(request.get_tensor(o).data, copy=True) for o in compiled.outputs])
    return digest(out)


def same_bits(arm: Arm, batches: list[np.ndarray], expected: str) -> bool:
    alone = [arm.run(b) for b in batches]
    together: dict[int, Outputs] = {}

    def part(slot: int) -> None:
        for j in range(slot, len(batches), 2):
            together[j] = arm.run(batches[j], slot)
    threads = [threading.Thread(target=part, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return digest(alone) == expected == digest([together[j] for j in range(len(batches))])


def block(arm: Arm, batches: list[np.ndarray], callers: int, seconds: float) -> tuple[float, float, float]:
    """(process CPU ms per call, wall ms per call per caller, the calling threads' own CPU ms per call) of
    ``callers`` threads looping over ``batches``."""
    stop = threading.Event()
    calls = [0] * callers
    walls = [0.0] * callers
    own = [0.0] * callers
    barrier = threading.Barrier(callers + 1)

    def loop(slot: int) -> None:
        i = slot * (len(batches) // 2 + 1)
        barrier.wait()
        started, cpu = time.perf_counter(), time.thread_time()
        while not stop.is_set():
            arm.run(batches[i % len(batches)], slot)
            i += 1
            calls[slot] += 1
        walls[slot] = time.perf_counter() - started
        own[slot] = time.thread_time() - cpu

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(callers)]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    barrier.wait()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu0
    return (1000.0 * cpu / sum(calls), 1000.0 * statistics.mean(w / c for w, c in zip(walls, calls, strict=True)),
            1000.0 * sum(own) / sum(calls))


def measure(role: str, batches: list[np.ndarray], arms: list[Arm], rounds: int, seconds: float
            ) -> dict[str, Mapping[str, object]]:
    expected = reference(MODELS[role], batches)
    for arm in arms:
        arm.open(MODELS[role])
    bits = {arm.name: same_bits(arm, batches, expected) for arm in arms}
    figures: dict[tuple[str, int], list[tuple[float, float, float]]] = {(a.name, c): [] for a in arms for c in (1, 2)}
    for r in range(rounds):
        for callers in (1, 2):
            for arm in arms if r % 2 == 0 else arms[::-1]:
                figures[arm.name, callers].append(block(arm, batches, callers, seconds))
    result: dict[str, Mapping[str, object]] = {}
    for arm in arms:
        row: dict[str, object] = {"same_bits": bits[arm.name]}
        for callers in (1, 2):
            row[f"cpu{callers}"] = statistics.median(f[0] for f in figures[arm.name, callers])
            row[f"wall{callers}"] = statistics.median(f[1] for f in figures[arm.name, callers])
            row[f"own{callers}"] = statistics.median(f[2] for f in figures[arm.name, callers])
        result[arm.name] = row
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench-paired-items")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--arms", default="", help="comma-separated substrings of arm names (default: all)")
    args = parser.parse_args()
    batches = record(args.items_dir, args.items)
    sizes = sorted(b.shape[0] for b in batches["classifier"])
    print(f"recorded {len(batches['detector'])} detector calls, {len(batches['classifier'])} classifier calls "
          f"(batch sizes {sizes})", file=sys.stderr)
    wanted = [s for s in args.arms.split(",") if s]
    results = {}
    for role in ("detector", "classifier"):
        arms = [Arm(a.name, dict(a.config), a.dispatch, a.copies, a.static) for a in ARMS
                if not wanted or any(w in a.name for w in wanted)]
        results[role] = measure(role, batches[role], arms, args.rounds, args.seconds)
    print("| lever | detector CPU ms/call, 1 / 2 callers | classifier CPU ms/call, 1 / 2 callers "
          "| callers' own CPU ms/call det, cls (1 caller) | wall ms/call det, cls (1 / 2 callers) | same bits |")
    print("|---|---|---|---|---|---|")
    for name in results["detector"]:
        d, c = results["detector"][name], results["classifier"][name]
        print(f"| {name} | {d['cpu1']:.2f} / {d['cpu2']:.2f} | {c['cpu1']:.2f} / {c['cpu2']:.2f} "
              f"| {d['own1']:.2f}, {c['own1']:.2f} "
              f"| {d['wall1']:.1f} / {d['wall2']:.1f}, {c['wall1']:.1f} / {c['wall2']:.1f} "
              f"| {'yes' if d['same_bits'] and c['same_bits'] else 'no'} |")


if __name__ == "__main__":
    main()
