"""``edge bench``: measure the screening pipeline on this box (runtime side; no torch).

Where it sits: a typer command function mounted by ``edge/cli.py`` as ``edge bench``; the work is in
:mod:`edge_tools.bench.suite`. ``benchmarks/bench_pipeline.py`` runs the same suite and adds the PyTorch-eager column.

Must not: import torch, or hold measuring logic.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from edge_tools.bench.report import render_markdown
from edge_tools.bench.suite import REPO_MODELS, BenchOptions, parse_list, run_bench


def bench_command(
    detector: Path = typer.Option(REPO_MODELS / "detector-agnostic", "--detector", help="detector bundle folder"),
    scorer: Path | None = typer.Option(None, "--scorer", help="scorer bundle folder; default: the reference "
                                       "models/scorer-stfpm when present"),
    no_scorer: bool = typer.Option(False, "--no-scorer", help="no scorer (detector only, or detector + "
                                   "--classifier)"),
    classifier: Path | None = typer.Option(None, "--classifier", help="classifier bundle folder for "
                                           "models.classifier (e.g. models/classifier-threat: the default "
                                           "combination is detector + classifier + scorer); default: none"),
    items: int = typer.Option(40, "--items", "-n", min=1, help="virtual-scanner items per configuration"),
    seed: int = typer.Option(0, help="virtual scanner seed (items and calibrations)"),
    preset: str = typer.Option("parcels", help="item stream: parcels, baggage or electronics"),
    threat_rate: float = typer.Option(0.2, min=0.0, max=1.0, help="fraction of items carrying a threat"),
    backends: str = typer.Option("openvino,onnxruntime", help="comma-separated backends"),
    precisions: str = typer.Option("fp32,int8", help="comma-separated precisions"),
    batches: str = typer.Option("1,8,32", help="comma-separated scorer batch sizes (crops per call)"),
    threads: str = typer.Option("2", help="comma-separated inference threads per model (models.threads)"),
    workers: str = typer.Option("2", help="comma-separated pipeline item workers (decide.workers)"),
    latency_load: float = typer.Option(0.5, min=0.05, max=1.0, help="arrival rate of the latency pass, as a "
                                       "fraction of the measured throughput"),
    throughput_runs: int = typer.Option(3, min=1, help="throughput passes per configuration (best is reported)"),
    cold_start_runs: int = typer.Option(3, min=0, help="edge run starts timed to READY (0 = skip)"),
    items_dir: Path | None = typer.Option(None, help="keep rendered items here and reuse them next time"),
    out: Path | None = typer.Option(None, "--out", "-o", help="write the JSON record here"),
    markdown: Path | None = typer.Option(None, "--markdown", help="also write the Markdown tables here"),
) -> None:
    """Per-stage and end-to-end latency (p50/p95/p99), items/s, RSS, load/warm-up time, cold start to READY
    and a roofline column per model, for each backend x precision x scorer batch size x threads per model x
    pipeline workers.

    Each configuration runs in its own process on the same rendered items: pipelined at full speed, paced at
    half of that, and as a plain sequential loop over the same stages. Figures are printed as Markdown; the
    machine's load average is recorded with every figure (shared cores slow everything down).

    Example: edge bench --items 40 --backends openvino --precisions fp32,int8 --batches 8 -o bench.json

    The default combination (detector + classifier + scorer), then without the scorer:
    edge bench --classifier models/classifier-threat --backends openvino --precisions fp32 --batches 8
    edge bench --classifier models/classifier-threat --no-scorer --backends openvino --precisions fp32
    """
    try:
        opts = BenchOptions(
            detector=detector,
            scorer=None if no_scorer else (scorer if scorer is not None else _default_scorer()),
            items=items, seed=seed, preset=preset, threat_rate=threat_rate,
            backends=parse_list(backends, ("openvino", "onnxruntime")),
            precisions=parse_list(precisions, ("fp32", "int8")),
            batches=tuple(int(b) for b in parse_list(batches)),
            threads=tuple(int(t) for t in parse_list(threads)),
            workers=tuple(int(w) for w in parse_list(workers)), latency_load=latency_load,
            cold_start_runs=cold_start_runs, items_dir=items_dir, throughput_runs=throughput_runs,
            classifier=classifier,
        )
    except ValueError as exc:
        typer.echo(f"edge bench: {exc}", err=True)
        raise typer.Exit(code=2) from None
    for bundle in (opts.detector, opts.scorer, opts.classifier):
        if bundle is not None and not (bundle / "bundle.yaml").is_file():
            typer.echo(f"edge bench: {bundle}: not a bundle folder (no bundle.yaml)", err=True)
            raise typer.Exit(code=2)
    try:
        result = run_bench(opts, progress=lambda text: typer.echo(text, err=True))
    except RuntimeError as exc:
        typer.echo(f"edge bench: {exc}", err=True)
        raise typer.Exit(code=1) from None
    table = render_markdown(result)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(table, encoding="utf-8")
    typer.echo(table)


def _default_scorer() -> Path | None:
    reference = REPO_MODELS / "scorer-stfpm"
    return reference if (reference / "bundle.yaml").is_file() else None


bench_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
bench_app.command(name="bench")(bench_command)
