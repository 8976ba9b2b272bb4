"""Benchmark: ``edge fit`` end to end on 500 benign items from an audit store, on 2 cores.

Target (issue 7): ``edge fit`` on 500 benign items from the audit store produces a working bundle in under 10
minutes on 2 cores.

The audit store is made for real: the service (``build_runtime``: virtual scanner, conditioning with the
scanner's own calibrations made by ``edge calibrate ... --from-sim``, the reference detector
``models/detector-agnostic``) screens ``--items`` benign items (threat rate 0) with ``audit.save_inputs`` on.
The collecting config has no scorer, so every item the detector screens is CLEAR: the fit's cost depends on
the number of items and objects, not on how they were judged. Then ``edge fit`` runs as a subprocess (what an
operator runs) on ``models/scorer-padim`` and is timed: wall clock, CPU time of the process, and the load
average before and after (the cores are shared). The new bundle is then opened on both runtime backends.
Results go to ``benchmarks/results/bench_fit.json``.

Run:  .venv/bin/python benchmarks/bench_fit.py [--items 500] [--work /tmp/xray-bench-fit] [--audit DIR]
(``--audit`` reuses a store made before, with the config ``WORK/edge.yaml`` written then.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "bench_fit.json"
TARGET_S = 600.0


def calibrate(work: Path, seed: int) -> tuple[Path, Path]:
    """The virtual scanner's flat-field and energy calibration, made by the commissioning commands."""
    flat, energy = work / "flatfield.npz", work / "energy.yaml"
    for args, out in ((["flatfield"], flat), (["energy"], energy)):
        if out.exists():
            continue
        subprocess.run([sys.executable, "-m", "edge", "calibrate", *args, "--from-sim", "--seed", str(seed), "-o",
                        str(out)], check=True, cwd=REPO, capture_output=True, timeout=600)
    return flat, energy


def write_config(path: Path, work: Path, flat: Path, energy: Path, items: int, seed: int,
                 scorer: Path | None) -> Path:
    scorer_line = f"  scorer: {scorer}\n" if scorer is not None else ""
    path.write_text(f"""site:
  site_id: bench-site
  scanner_id: lane1
source:
  type: sim
  seed: {seed}
  threat_rate: 0.0
  items_per_minute: 6000
  max_items: {items}
condition:
  flatfield_file: {flat}
  energy_file: {energy}
models:
  detector: {REPO / "models" / "detector-agnostic"}
{scorer_line}  backend: openvino
  threads: 2
  allow_unsigned: true   # the reference bundles in models/ are not signed (docs/install.md)
decide:
  deadline_s: 600
  queue_depth: 64
audit:
  directory: {work / "audit"}
  save_inputs: true
  quota_mb: 20000
mqtt:
  enabled: false
  outbox:
    path: {work / "outbox.sqlite3"}
service:
  status_file: {work / "status.json"}
""", encoding="utf-8")
    return path


def collect(config: Path, items: int) -> dict[str, object]:
    """Screen ``items`` virtual-scanner items with the service, keeping raw inputs in the audit store."""
    from edge.config import load_config
    from edge.runtime import build_runtime, build_source
    from edge.sinks.memory import MemorySink

    cfg = load_config(config)
    memory = MemorySink()
    # build_runtime keeps the raw inputs itself (audit.save_inputs), under each record's name.
    runtime = build_runtime(cfg, source=build_source(cfg), extra_sinks=[memory])
    started = time.monotonic()
    runtime.pipeline.start()
    try:
        if not memory.wait_for(items, timeout_s=3600):
            raise SystemExit(f"only {len(memory.decisions)} of {items} items decided within an hour")
    finally:
        runtime.pipeline.stop(10.0)
        runtime.models.current.close()
    verdicts: dict[str, int] = {}
    for d in memory.decisions:
        verdicts[str(d.verdict)] = verdicts.get(str(d.verdict), 0) + 1
    return {"items": len(memory.decisions), "verdicts": verdicts, "seconds": round(time.monotonic() - started, 1),
            "objects": sum(len(d.objects) for d in memory.decisions)}


def check_bundle(path: Path) -> dict[str, object]:
    """Open the new bundle on both runtime backends and score a few zero-mean crops (it must run)."""
    from edge.backends import open_backend
    from edge.bundles import ScorerOutputs, load_bundle

    bundle = load_bundle(path)
    c = bundle.contract
    x = np.random.default_rng(0).normal(0, 1, (4, c.tensor_channels, c.height, c.width)).astype(np.float32)
    scores = {}
    for backend in ("onnxruntime", "openvino"):
        session = open_backend(bundle, backend, "fp32", threads=2)
        out = session.predict(x)
        session.close()
        assert isinstance(out, ScorerOutputs)
        scores[backend] = [round(float(s), 4) for s in out.score]
    return {"version": bundle.manifest.version, "scores_random_crops": scores}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--work", type=Path, default=Path("/tmp/xray-bench-fit"))
    ap.add_argument("--audit", type=Path, default=None, help="reuse this audit store (and WORK/edge.yaml)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    config = work / "edge.yaml"
    result: dict[str, object] = {"benchmark": "bench_fit", "target_s": TARGET_S,
                                 "when_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                                 "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if args.audit is None:
        flat, energy = calibrate(work, args.seed)
        write_config(config, work, flat, energy, args.items, args.seed, None)
        print(f"collecting {args.items} benign items into {work / 'audit'} …", flush=True)
        result["collect"] = collect(config, args.items)
        print(json.dumps(result["collect"]), flush=True)
        audit = work / "audit"
    else:
        audit = args.audit
        since = "2000-01-01"
    out = work / "scorer-padim-site"
    load_before = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "edge", "fit", "--from", str(audit), "--since", since,
                           "--config", str(config), "--bundle", str(REPO / "models" / "scorer-padim"),
                           "-o", str(out), "--force", "--threads", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"edge fit failed ({proc.returncode}):\n{proc.stderr}")
    summary = json.loads(proc.stdout)
    result["fit"] = {"wall_s": round(wall, 1), "cpu_s": round((after.ru_utime + after.ru_stime)
                                                                - (before.ru_utime + before.ru_stime), 1),
                     "load_avg_before": [round(v, 2) for v in load_before],
                     "load_avg_after": [round(v, 2) for v in os.getloadavg()],
                     "passed": wall < TARGET_S, "summary": summary}
    result["bundle_check"] = check_bundle(out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["fit"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
