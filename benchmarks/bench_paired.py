"""Benchmark: CPU ms per item of the reference pipeline, paired against another checkout of the code (before/after).

The reference pipeline is the service's: ``detector-agnostic`` + ``classifier-threat``, OpenVINO INT8, scorer
batch 8, one inference thread per model, two item workers, the audit sink (MQTT off), on rendered virtual-scanner
items. Each checkout runs in its own process (``--child``: the checkout's own ``edge`` first on ``sys.path``,
measured with that checkout's bench machinery, ``edge_tools.bench.runner`` or, before the tools split,
``edge.bench.runner``), and the checkouts alternate round by round, so that both see the same machine load. The
figure is **process CPU time per item** (``time.process_time``: every thread of the process, the runtimes' too),
not wall time: on shared cores wall time includes other people's work. Each round measures, per checkout, a
throughput pass (items as fast as the pipeline takes them: CPU ms/item), a latency pass (items arriving at a fixed
period, as on a belt: item latency p50/p99, hand-over to decision) and a sequential pass (one item at a time in
one thread, no pipeline: process CPU ms per stage, and for the audit sink's publish).

Run (a worktree of the commit before a change, then this tree)::

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/bench_paired.py --before /tmp/before --rounds 6

Items and calibrations are rendered once by the bench's ``prepare_items`` into ``--items-dir`` and reused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def child(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One round's measurements of the code in ``tree`` (run in a fresh process)."""
    sys.path.insert(0, str(tree))
    try:
        from edge_tools.bench import runner
    except ImportError:
        from edge.bench import runner  # type: ignore[no-redef]  # before the tools split
    from edge.screening import ModelHolder, ModelSet

    files = tuple(str(args.items_dir / f"{i:06d}.npz") for i in range(args.items))
    spec = runner.RunSpec(backend="openvino", precision=args.precision, scorer_batch=args.batch, threads=args.threads,
                          detector=str(args.detector), scorer=str(args.scorer), items=files,
                          flatfield=str(args.items_dir / "flatfield.npz"), energy=str(args.items_dir / "energy.yaml"),
                          peak_gflops=1.0, workers=args.workers)
    with tempfile.TemporaryDirectory(prefix="bench-paired-") as tmp:
        cfg = runner.bench_config(spec, Path(tmp))
        detector = runner.open_model(spec.detector, "openvino", spec.precision, spec.threads, spec.workers)[0]
        scorer = runner.open_model(str(args.scorer), "openvino", spec.precision, spec.threads, spec.workers)[0]
        holder = ModelHolder(ModelSet(detector, scorer))
        runner.run_pass(cfg, holder, spec, None)  # warm caches and the allocator; not counted
        throughput = [runner.run_pass(cfg, holder, spec, None) for _ in range(args.passes)]
        latency = runner.run_pass(cfg, holder, spec, args.period)
        stage_cpu = sequential_cpu(runner, cfg, holder, spec)
    best = min(throughput, key=lambda p: p.cpu_ms_per_item)
    return {"cpu_ms_per_item": [p.cpu_ms_per_item for p in throughput],
            "stages_p50_ms": {k: v.p50_ms for k, v in best.stages.items()}, "stage_cpu_ms": stage_cpu,
            "latency_p50_ms": latency.item_latency.p50_ms, "latency_p99_ms": latency.item_latency.p99_ms,
            "verdicts": best.verdicts, "objects_per_item": best.objects_per_item, "load_avg": latency.load_avg}


def sequential_cpu(runner: Any, cfg: Any, holder: Any, spec: Any) -> dict[str, float]:
    """Process CPU ms per item of each stage and of the audit sink's publish, items one at a time in this thread
    (the checkout's own ``build_stages``; only this work runs in the process meanwhile)."""
    from edge.runtime import build_stages, load_conditioner
    from edge.sinks.audit import AuditStore
    from edge.stages.score import ScoreStage

    conditioner, missing = load_conditioner(cfg)
    stages = [replace(s, fn=ScoreStage(holder, spec.scorer_batch)) if s.name == "score" else s
              for s in build_stages(cfg, holder, conditioner, missing)]
    audit = AuditStore(cfg.audit, cfg.site.site_id)
    source = runner.ReplaySource([Path(p) for p in spec.items], "bench", runner.OFFLINE_DEADLINE_S)
    raws = []
    while (raw := source.next_item(1.0)) is not None:
        raws.append(raw)
    cpu: dict[str, float] = {s.name: 0.0 for s in stages}
    cpu["publish (audit)"] = 0.0
    for raw in raws:
        record: object = raw
        for stage in stages:
            started = time.process_time()
            record = stage.fn(record)
            cpu[stage.name] += time.process_time() - started
        started = time.process_time()
        audit.publish(record)  # type: ignore[arg-type]
        cpu["publish (audit)"] += time.process_time() - started
    audit.close(1.0)
    return {name: round(1000.0 * total / max(len(raws), 1), 2) for name, total in cpu.items()}


def run_child(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(tree), "--items-dir", str(args.items_dir),
           "--items", str(args.items), "--passes", str(args.passes), "--period", str(args.period),
           "--precision", args.precision, "--batch", str(args.batch), "--threads", str(args.threads),
           "--workers", str(args.workers), "--detector", str(args.detector), "--scorer", str(args.scorer)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tree).stdout
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="checkout of the code before the change (a git worktree)")
    parser.add_argument("--after", type=Path, default=ROOT, help="checkout of the code after it (this tree)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--passes", type=int, default=2, help="throughput passes per checkout and round")
    parser.add_argument("--period", type=float, default=0.1, help="latency pass: seconds between arrivals")
    parser.add_argument("--items-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench-paired-items")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--detector", type=Path, default=ROOT / "models" / "detector-agnostic")
    parser.add_argument("--scorer", type=Path, default=ROOT / "models" / "classifier-threat")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_paired.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args)))
        return
    if args.before is None:
        parser.error("--before is required")
    if not (args.items_dir / "flatfield.npz").is_file():
        sys.path.insert(0, str(args.after))
        try:
            from edge_tools.bench.items import prepare_items
        except ImportError:
            from edge.bench.items import prepare_items  # type: ignore[no-redef]
        prepare_items(args.items_dir, args.items, progress=True)
    rounds: list[dict[str, Any]] = []
    for index in range(args.rounds):
        # Alternate which checkout goes first, so that neither always runs on the warmer (or busier) moment.
        order = [("before", args.before), ("after", args.after)]
        if index % 2:
            order.reverse()
        members = {name: run_child(tree, args) for name, tree in order}
        rounds.append(members)
        print(f"round {index + 1}: " + "; ".join(
            f"{name} {min(m['cpu_ms_per_item']):.1f} CPU ms/item, p99 {m['latency_p99_ms']:.0f} ms, load "
            f"{m['load_avg'][0] if isinstance(m['load_avg'], list) else m['load_avg']}"
            for name, m in members.items()), flush=True)
    summary: dict[str, Any] = {}
    for name in ("before", "after"):
        cpu = [min(r[name]["cpu_ms_per_item"]) for r in rounds]
        summary[name] = {"cpu_ms_per_item_median": round(statistics.median(cpu), 2), "cpu_ms_per_item": cpu,
                         "latency_p99_ms_median": statistics.median(r[name]["latency_p99_ms"] for r in rounds),
                         "latency_p50_ms_median": statistics.median(r[name]["latency_p50_ms"] for r in rounds),
                         "stages_p50_ms": {k: statistics.median(r[name]["stages_p50_ms"].get(k, 0.0) for r in rounds)
                                           for k in rounds[0][name]["stages_p50_ms"]},
                         "stage_cpu_ms": {k: statistics.median(r[name]["stage_cpu_ms"].get(k, 0.0) for r in rounds)
                                          for k in rounds[0][name]["stage_cpu_ms"]}}
    ratios = [min(r["after"]["cpu_ms_per_item"]) / min(r["before"]["cpu_ms_per_item"]) for r in rounds]
    summary["after_over_before_median"] = round(statistics.median(ratios), 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rounds": rounds, "summary": summary}, indent=1, default=str), encoding="utf-8")
    print(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
