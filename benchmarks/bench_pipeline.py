"""Benchmark: the reference pipeline on OpenVINO / ONNX Runtime (FP32, INT8, scorer batch sizes) against the
same models as a sequential PyTorch-eager pipeline, in one run, on virtual-scanner items.

Targets (issue 14, 2 cores): end-to-end items/s >= 5x PyTorch eager; p99 item latency <= 500 ms for
640-channel parcels; steady-state RSS <= 1.5 GB; cold start to READY <= 5 s.

The runtime side is ``edge bench`` (``edge_tools.bench.suite.run_bench``: each configuration in its own process);
the eager side is ``benchmarks/eager_pipeline.py`` (torch models rebuilt from the bundles' ONNX weights, parity
checked against ONNX Runtime), run in its own process on the same items, in paired rounds with the service's
reference configuration (OpenVINO FP32, scorer batch 8), at 2 and at 1 inference thread per model, so that
every member of a round sees the same machine load. The cores are
shared with other work: every figure carries the load average at the time, and CPU time per item is reported
beside wall time.
Writes ``benchmarks/results/bench_pipeline.json`` and the tables between the markers in
``docs/performance.md`` (``--scorer B --section NAME``: another scorer's run, ``bench_pipeline_NAME.json`` and
its own section).

Run:  .venv/bin/python benchmarks/bench_pipeline.py [--items 40] [--batches 1,8,32] [--items-dir /tmp/bench-items]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_tools.bench.report import paired_summary, render_markdown
from edge_tools.bench.runner import RunSpec
from edge_tools.bench.suite import REPO_MODELS, BenchOptions, parse_list, run_bench, run_in_process

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "performance.md"


def markers(section: str) -> tuple[str, str]:
    """The comments around a generated section: ``bench_pipeline`` (the reference pipeline) or
    ``bench_pipeline:NAME`` for another scorer's run."""
    name = "bench_pipeline" if not section else f"bench_pipeline:{section}"
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def update_doc(table: str, section: str = "") -> None:
    """Replace one generated section of docs/performance.md (the prose around it is kept)."""
    begin, end = markers(section)
    text = DOC.read_text(encoding="utf-8") if DOC.is_file() else f"# Performance\n\n{begin}\n{end}\n"
    if begin not in text or end not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    DOC.write_text(f"{head}{begin}\n{table}{end}{tail}", encoding="utf-8")


def run_eager(items_dir: Path, args: argparse.Namespace, detector: Path, scorer: Path | None, peak: float,
              threads: int, out: Path) -> dict[str, Any]:
    """One pass of the PyTorch-eager pipeline over the items, in its own process (its own RSS)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "eager_pipeline.py"), "--items-dir", str(items_dir),
           "--n", str(args.items), "--detector", str(detector), "--scorer-batch", str(args.eager_batch),
           "--runs", "1", "--threads", str(threads), "--peak-gflops", str(peak), "--out", str(out),
           "--scorer", str(scorer) if scorer is not None else ""]
    subprocess.run(cmd, check=True, cwd=ROOT)
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--backends", default="openvino,onnxruntime")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--threads", default="2,1", help="inference threads per model (eager: torch threads)")
    parser.add_argument("--workers", default="2", help="pipeline item workers (decide.workers)")
    parser.add_argument("--paired-precisions", default="fp32,int8",
                        help="precisions of the OpenVINO configurations paired with eager in each round")
    parser.add_argument("--eager-batch", type=int, default=8, help="scorer batch of the eager pipeline")
    parser.add_argument("--throughput-runs", type=int, default=3, help="runtime passes per configuration (best)")
    parser.add_argument("--paired-rounds", type=int, default=3,
                        help="rounds of (eager pass, reference configuration pass) back to back")
    parser.add_argument("--cold-start-runs", type=int, default=3)
    parser.add_argument("--items-dir", type=Path, default=None, help="keep/reuse rendered items here")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/performance.md")
    parser.add_argument("--scorer", type=Path, default=REPO_MODELS / "scorer-stfpm",
                        help="scorer or classifier bundle (the reference pipeline: models/scorer-stfpm)")
    parser.add_argument("--section", default="", help="name of the docs/performance.md section and results file "
                        "to write (default: the reference pipeline's; e.g. 'classifier' with --scorer "
                        "models/classifier-threat)")
    args = parser.parse_args()
    scorer: Path = args.scorer
    threads = tuple(int(t) for t in parse_list(args.threads))
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        items_dir = args.items_dir if args.items_dir is not None else Path(tmp) / "items"
        opts = BenchOptions(detector=REPO_MODELS / "detector-agnostic",
                            scorer=scorer if (scorer / "bundle.yaml").is_file() else None,
                            items=args.items, backends=parse_list(args.backends),
                            precisions=parse_list(args.precisions),
                            batches=tuple(int(b) for b in parse_list(args.batches)),
                            cold_start_runs=args.cold_start_runs, items_dir=items_dir,
                            throughput_runs=args.throughput_runs, threads=threads,
                            workers=tuple(int(w) for w in parse_list(args.workers)))
        specs: list[RunSpec] = []
        result = run_bench(opts, progress=lambda text: print(text, flush=True), specs_out=specs, workdir=Path(tmp))
        # The eager pipeline runs the same bundle snapshots the runtime configurations ran.
        detector = Path(specs[0].detector)
        scorer_snapshot = Path(specs[0].scorer) if specs[0].scorer is not None else None
        # Paired rounds: eager at each thread count and the service's reference configurations (OpenVINO, scorer
        # batch = the eager batch, each --paired-precisions) at each thread count, back to back, so that every
        # member of a round sees the same machine load.
        paired_precisions = parse_list(args.paired_precisions)
        references = {t: [sp for sp in specs if sp.backend == "openvino" and sp.scorer_batch == args.eager_batch
                          and sp.threads == t and sp.precision in paired_precisions] for t in threads}
        rounds: list[dict[str, Any]] = []
        eagers: dict[int, list[dict[str, Any]]] = {t: [] for t in threads}
        for index in range(args.paired_rounds):
            print(f"paired round {index + 1}/{args.paired_rounds}", flush=True)
            members: dict[str, Any] = {}
            for t in threads:
                eager = run_eager(items_dir, args, detector, scorer_snapshot, result["peak"]["gflops"], t,
                                  Path(tmp) / f"eager-{index}-{t}.json")
                eagers[t].append(eager)
                members[f"pytorch-eager/t{t}"] = eager["throughput"]
                for reference in references[t]:
                    members[reference.label] = run_in_process(replace(reference, throughput_runs=1))["throughput"]
            rounds.append(members)
        result["eager_runs"] = [max(runs, key=lambda x: x["throughput"]["items_per_s"])
                                for runs in eagers.values() if runs]
        comparisons = [paired_summary(ref.label, f"pytorch-eager/t{t}", rounds)
                       for t in threads for ref in references[t] if rounds]
        result["paired"] = {"rounds": rounds, "comparisons": comparisons}
    results = RESULTS / (f"bench_pipeline_{args.section}.json" if args.section else "bench_pipeline.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=1), encoding="utf-8")
    table = render_markdown(result)
    if not args.no_doc:
        update_doc(table, args.section)
    print(table)
    print(f"wrote {results}" + ("" if args.no_doc else f" and {DOC}"))


if __name__ == "__main__":
    main()
