"""Benchmark: peak memory (RSS) per item length, through the condition stage alone and the whole pipeline.

Why (issue 29 point 4): a legitimate 60,000-line item peaked at 2.05 GB, at the unit's ``MemoryMax=2G``; the
input bounds (``source.max_lines``, ``source.max_item_bytes``) must keep the largest legal item well inside it.
Each measurement runs in a fresh process (so the peak is that item's): the item is read from an ``.npz`` in a
spool folder by the spool reader, then run through the stages one after another as an item worker runs them
(condition → detect → score → localise → finish) with the reference bundles (``models/detector-agnostic`` and
``models/scorer-stfpm``, OpenVINO FP32) and the virtual scanner's calibrations (``edge calibrate --from-sim``).
The peak is the process's high-water mark (``VmHWM``) after the item; ``rss_before`` is the resident size once
the models are loaded and warmed on a small item, so ``item = peak - rss_before`` is what the item itself costs
(``base``, the high-water mark before the item, shows start-up transients).

Items are real virtual-scanner parcels (640 channels) laid end to end along the belt up to the requested length.
Results: ``benchmarks/results/bench_memory.json`` (``--write-doc`` also updates docs/performance.md's table).

``--service N`` also runs the real service (``edge run``, default input limits, two workers, intake queue of 8)
with N items of ``--service-lines`` lines (default: the default ``source.max_lines``) dropped into its spool at
once, and reports its peak RSS: the worst case the defaults allow.

Run:  .venv/bin/python benchmarks/bench_memory.py [--lines 2500 10000 20000 40000 60000] [--stages condition pipeline]
          [--service 12 --service-lines 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "bench_memory.json"
MB = 1024 * 1024


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _write_item(path: Path, lines: int) -> None:
    """A ``lines``-long 640-channel item: virtual-scanner parcels end to end (the belt between them is air)."""
    import numpy as np

    from sim.dataset import ItemStream

    stream = ItemStream(seed=0, threat_rate=0.5)
    parts = [stream.item(i).raw for i in range(6)]
    high = np.concatenate([p.high for p in parts])
    low = np.concatenate([p.low for p in parts])
    reps = -(-lines // high.shape[0])
    np.savez(path, high=np.tile(high, (reps, 1))[:lines], low=np.tile(low, (reps, 1))[:lines])


def _config(work: Path, limits: str = "  max_lines: 1000000\n  max_item_bytes: 8589934592\n") -> Path:
    flat, energy = work / "flatfield.npz", work / "energy.yaml"
    for args in (["flatfield", "--from-sim", "--seed", "0", "-o", str(flat)],
                 ["energy", "--from-sim", "--seed", "0", "-o", str(energy)]):
        subprocess.run([sys.executable, "-m", "edge", "calibrate", *args], check=True, capture_output=True,
                       cwd=ROOT, timeout=600)
    path = work / "edge.yaml"
    path.write_text(f"""site:
  site_id: bench
  scanner_id: lane1
source:
  type: spool
  directory: {work / "spool"}
  done_directory: {work / "done"}
  poll_s: 0.05
{limits}condition:
  flatfield_file: {flat}
  energy_file: {energy}
models:
  detector: {ROOT / "models" / "detector-agnostic"}
  scorer: {ROOT / "models" / "scorer-stfpm"}
  allow_unsigned: true
  backend: openvino
  threads: 1
audit:
  directory: {work / "audit"}
mqtt:
  enabled: false
  outbox:
    path: {work / "outbox.sqlite3"}
service:
  status_file: {work / "status.json"}
""")
    return path


def child(config: Path, item: Path, small: Path, stages_kind: str) -> dict[str, object]:
    """Run one item in this (fresh) process; return the peak figures."""
    from edge.config.root import load_config
    from edge.records import RawItem
    from edge.runtime import build_stages, load_conditioner
    from edge.screening import ModelHolder, load_models
    from edge.sources.bounds import InputLimits
    from edge.sources.item_meta import file_item_meta
    from edge.sources.spool import read_spool_item
    from edge.stages.condition import ConditionStage

    cfg = load_config(config)
    conditioner, missing = load_conditioner(cfg)
    assert conditioner is not None, missing
    fns: list[Callable[[Any], Any]]
    if stages_kind == "condition":
        fns = [ConditionStage(conditioner, "", cfg.condition.quality)]
    else:
        holder = ModelHolder(load_models(cfg.models, 1))
        fns = [s.fn for s in build_stages(cfg, holder, conditioner, None)]
    limits = InputLimits(10**7, 10**5, 2**40)

    def run(path: Path) -> tuple[float, object]:
        high, low = read_spool_item(path, limits)
        x: Any = RawItem(meta=file_item_meta("lane1", 1, path.stem, 600.0), high=high, low=low)
        del high, low
        started = time.monotonic()
        for fn in fns:
            x = fn(x)
        return time.monotonic() - started, x

    run(small)  # warm: first-call allocations (OpenCV, OpenVINO infer requests) are not the item's
    base, resident = _status_bytes("VmHWM"), _status_bytes("VmRSS")
    elapsed, result = run(item)
    verdict = getattr(result, "verdict", None)
    return {"base_mb": base / MB, "rss_before_mb": resident / MB, "peak_mb": _status_bytes("VmHWM") / MB,
            "seconds": elapsed,
            "verdict": None if verdict is None else str(verdict.value),
            "reason": None if getattr(result, "reason", None) is None else str(result.reason.value)}  # type: ignore[attr-defined]


def service(items: int, lines: int) -> dict[str, object]:
    """``edge run`` (default input limits, ``decide.workers`` 2, intake queue 8) with ``items`` items of
    ``lines`` lines dropped into its spool at once: the service's peak RSS while it screens them all."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-service-") as tmp:
        work = Path(tmp)
        (work / "spool").mkdir()
        config = _config(work, limits="")
        _write_item(work / "item.npz", lines)
        with open(work / "edge.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(config)], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 300
            while not (work / "status.json").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"edge run did not start:\n{(work / 'edge.log').read_text()[-3000:]}")
                time.sleep(0.1)
            status = Path(f"/proc/{proc.pid}/status")
            idle = _proc_bytes(status, "VmRSS")
            data = (work / "item.npz").read_bytes()
            for n in range(items):
                (work / "spool" / f".item{n:03d}.npz.tmp").write_bytes(data)
                (work / "spool" / f".item{n:03d}.npz.tmp").rename(work / "spool" / f"item{n:03d}.npz")
            started = time.monotonic()
            while len(list((work / "audit").rglob("*.json"))) < items:
                if proc.poll() is not None:
                    raise SystemExit(f"edge run died:\n{(work / 'edge.log').read_text()[-3000:]}")
                if time.monotonic() - started > 1800:
                    raise SystemExit("edge run did not decide every item in 30 min")
                time.sleep(0.2)
            peak = _proc_bytes(status, "VmHWM")
            records = [json.loads(p.read_text()) for p in (work / "audit").rglob("*.json")]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    verdicts: dict[str, int] = {}
    for body in records:
        key = str(body.get("reason") or body.get("verdict"))
        verdicts[key] = verdicts.get(key, 0) + 1
    return {"items": items, "lines": lines, "idle_mb": idle / MB, "peak_mb": peak / MB,
            "seconds": time.monotonic() - started, "decisions": verdicts}


def _proc_bytes(status: Path, key: str) -> int:
    for line in status.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[2500, 10000, 20000, 40000, 60000])
    parser.add_argument("--stages", nargs="+", default=["condition", "pipeline"], choices=["condition", "pipeline"])
    parser.add_argument("--service", type=int, metavar="N", default=0,
                        help="also run edge run with N items of --service-lines dropped at once")
    parser.add_argument("--service-lines", type=int, default=20_000)
    parser.add_argument("--child", nargs=4, metavar=("CONFIG", "ITEM", "SMALL", "STAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        config, item, small, kind = args.child
        print(json.dumps(child(Path(config), Path(item), Path(small), kind)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        (work / "spool").mkdir()
        config = _config(work)
        small = work / "spool" / "small.npz"
        _write_item(small, 500)
        for lines in args.lines:
            item = work / "spool" / f"item{lines}.npz"
            _write_item(item, lines)
            for kind in args.stages:
                out = subprocess.run([sys.executable, __file__, "--child", str(config), str(item), str(small), kind],
                                     capture_output=True, text=True, cwd=ROOT, timeout=3600)
                if out.returncode != 0:
                    raise SystemExit(f"{kind} at {lines} lines failed:\n{out.stderr[-3000:]}")
                row = {"lines": lines, "channels": 640, "raw_mb": lines * 640 * 4 / MB, "stages": kind,
                       **json.loads(out.stdout.strip().splitlines()[-1])}
                row["item_mb"] = float(row["peak_mb"]) - float(row["rss_before_mb"])
                rows.append(row)
                print(f"{lines:>6} lines {kind:>9}: base {row['base_mb']:.0f} MB, peak {row['peak_mb']:.0f} MB, "
                      f"item {row['item_mb']:.0f} MB, {row['seconds']:.1f} s", flush=True)
            item.unlink()
    result: dict[str, object] = {"measured": datetime.now(UTC).isoformat(timespec="seconds"),
                                 "load_average": os.getloadavg(), "rows": rows}
    if args.service:
        result["service"] = service(args.service, args.service_lines)
        print(json.dumps(result["service"]), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
