"""The whole runtime-side bench: items, peak, every configuration in its own process, cold start.

Where it sits: called by ``edge bench`` (``edge_tools.bench.cli``) and by ``benchmarks/bench_pipeline.py``, which
adds the PyTorch-eager column to the same record. Returns a JSON-ready dict (schema ``xray-edge/bench``).

Must not: import torch or ``export/``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.bundles.loader import load_bundle
from edge.bundles.manifest import Precision
from edge.errors import EdgeError
from edge_tools.bench.coldstart import measure_cold_start
from edge_tools.bench.items import ItemSet, prepare_items
from edge_tools.bench.roofline import measure_peak
from edge_tools.bench.runner import FORMATS, RunSpec
from edge_tools.bench.stats import load_average

SCHEMA = "xray-edge/bench"
REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to measure. ``batches`` are scorer batch sizes (crops per inference call); ``threads`` are
    inference threads per model (``models.threads``); ``workers`` are the pipeline's item workers
    (``decide.workers``: items screened at once, each worker running every stage)."""

    detector: Path
    scorer: Path | None
    items: int = 40
    seed: int = 0
    preset: str = "parcels"
    threat_rate: float = 0.2
    backends: tuple[str, ...] = ("openvino", "onnxruntime")
    precisions: tuple[str, ...] = ("fp32", "int8")
    batches: tuple[int, ...] = (1, 8, 32)
    threads: tuple[int, ...] = (2,)
    workers: tuple[int, ...] = (2,)
    latency_load: float = 0.5
    max_objects: int = 32
    cold_start_runs: int = 3
    items_dir: Path | None = None
    micro_repeats: int = 20
    throughput_runs: int = 3
    classifier: Path | None = None
    """``models.classifier`` beside the detector and the scorer (None: none, as before issue 32)."""


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "logical_cpus": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "platform": platform.platform()}


def has_precision(bundle_dir: Path, backend: str, precision: str) -> bool:
    """True if the bundle has a model at ``precision`` in a format ``backend`` opens."""
    bundle = load_bundle(bundle_dir, verify_hashes=False)
    want = Precision(precision)
    return any(m.precision == want and m.format in FORMATS[backend] for m in bundle.manifest.models)


def plan(opts: BenchOptions) -> tuple[list[tuple[str, str, int, int, int]], list[dict[str, str]]]:
    """Configurations to run, and those skipped with why (no model at that precision for that backend)."""
    runs: list[tuple[str, str, int, int, int]] = []
    skipped: list[dict[str, str]] = []
    bundles = [b for b in (opts.detector, opts.scorer, opts.classifier) if b is not None]
    for backend in opts.backends:
        for precision in opts.precisions:
            if not any(has_precision(b, backend, precision) for b in bundles):
                skipped.append({"backend": backend, "precision": precision,
                                "why": f"no bundle has a {precision} model that {backend} can open"})
                continue
            runs.extend((backend, precision, batch, t, w) for w in opts.workers for t in opts.threads
                        for batch in opts.batches)
    return runs, skipped


def run_in_process(spec: RunSpec, timeout_s: float = 1800.0) -> dict[str, Any]:
    """Measure ``spec`` in a fresh ``python -m edge_tools.bench.runner`` process (clean RSS and load times)."""
    with tempfile.TemporaryDirectory(prefix="edge-bench-spec-") as tmp:
        spec_file, out_file = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_file.write_text(json.dumps(asdict(spec)), encoding="utf-8")
        result = subprocess.run([sys.executable, "-m", "edge_tools.bench.runner", str(spec_file), str(out_file)],
                                capture_output=True, text=True, timeout=timeout_s)
        if result.returncode != 0:
            raise RuntimeError(f"bench of {spec.label} failed (exit {result.returncode}): {result.stderr[-3000:]}")
        data: dict[str, Any] = json.loads(out_file.read_text(encoding="utf-8"))
        return data


def item_summary(items: ItemSet) -> dict[str, Any]:
    lines = items.lines
    return {"n": len(items.files), "seed": items.seed, "preset": items.preset, "threat_rate": items.threat_rate,
            "channels": items.channels, "lines_mean": round(sum(lines) / max(len(lines), 1), 1),
            "lines_max": max(lines) if lines else 0}


def snapshot(bundle: Path, into: Path) -> tuple[Path, str]:
    """Copy a bundle folder and verify the copy, so that every configuration of one run measures the same
    model even if the bundle is re-exported meanwhile; returns (copy, ``name@version sha256:…``).

    Raises:
        RuntimeError: the copy does not verify (typically: the bundle was being rewritten while copied).
    """
    target = into / bundle.name
    shutil.copytree(bundle, target)
    try:
        ref = load_bundle(target).model_ref
    except EdgeError as exc:
        raise RuntimeError(f"{bundle}: the copied bundle does not verify ({exc}); is it being rewritten? "
                           "try again") from exc
    return target, f"{ref.name}@{ref.version} sha256:{ref.sha256[:12]}"


def run_bench(opts: BenchOptions, progress: Callable[[str], None] = print,
              specs_out: list[RunSpec] | None = None, workdir: Path | None = None) -> dict[str, Any]:
    """Everything, in order: bundle snapshots, items + calibrations, machine peak, each configuration, cold
    start.

    ``specs_out`` receives the specs that ran (``benchmarks/`` reuses their items and bundle snapshots for the
    eager pipeline; pass a ``workdir`` that outlives this call so that the snapshots still exist).
    """
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        work = workdir if workdir is not None else Path(tmp)
        (work / "bundles").mkdir(parents=True, exist_ok=True)
        detector, detector_ref = snapshot(opts.detector, work / "bundles")
        scorer, scorer_ref = snapshot(opts.scorer, work / "bundles") if opts.scorer is not None else (None, None)
        classifier, classifier_ref = (snapshot(opts.classifier, work / "bundles") if opts.classifier is not None
                                      else (None, None))
        progress(f"bundles: {', '.join(r for r in (detector_ref, scorer_ref, classifier_ref) if r)}")
        opts = replace(opts, detector=detector, scorer=scorer, classifier=classifier)
        directory = opts.items_dir if opts.items_dir is not None else work / "items"
        progress(f"rendering/reusing {opts.items} virtual-scanner items in {directory}")
        items = prepare_items(directory, opts.items, opts.seed, opts.preset, opts.threat_rate)
        progress("measuring the fp32 matmul peak")
        peak = measure_peak(2)
        runs, skipped = plan(opts)
        configs: list[dict[str, Any]] = []
        for backend, precision, batch, threads, workers in runs:
            spec = RunSpec(backend, precision, batch, threads, str(opts.detector),
                           None if opts.scorer is None else str(opts.scorer), tuple(str(f) for f in items.files),
                           str(items.flatfield), str(items.energy), peak.gflops, opts.latency_load,
                           opts.max_objects, opts.micro_repeats, opts.throughput_runs, workers,
                           None if opts.classifier is None else str(opts.classifier))
            progress(f"running {spec.label} (load avg {load_average()[0]})")
            configs.append(run_in_process(spec))
            if specs_out is not None:
                specs_out.append(spec)
        cold: list[dict[str, Any]] = []
        if opts.cold_start_runs > 0:
            backend = opts.backends[0]
            progress(f"cold start to READY on {backend}/fp32 ({opts.cold_start_runs} runs, uncached and cached)")
            cold = [asdict(c) for c in measure_cold_start(opts.detector, opts.scorer, items.flatfield,
                                                          items.energy, backend, "fp32", opts.cold_start_runs,
                                                          opts.classifier)]
        return {
            "schema": SCHEMA,
            "schema_version": 1,
            "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": machine(),
            "load_avg_end": load_average(),
            "peak": asdict(peak),
            "items": item_summary(items),
            "bundles": [r for r in (detector_ref, scorer_ref, classifier_ref) if r],
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()
                        if k not in ("detector", "scorer", "classifier", "items_dir")},
            "configs": configs,
            "skipped": skipped,
            "cold_start": cold,
        }


def parse_list(text: str, allowed: Sequence[str] | None = None) -> tuple[str, ...]:
    """Comma-separated values, checked against ``allowed`` with a clear error."""
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if allowed is not None:
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ValueError(f"{', '.join(bad)} not valid; expected some of {', '.join(allowed)}")
    if not values:
        raise ValueError("empty list")
    return values
