"""Virtual-scanner generation speed: items/s on N worker processes, and per-stage time of one item.

Run on demand (not part of the test suite)::

    .venv/bin/python benchmarks/bench_sim.py --n 60 --workers 2 --preset parcels

Writes ``benchmarks/results/sim_<preset>[_nocamera].json``: items/s end to end (raw PNGs, preview, camera JPEG,
truth files, COCO and events); CPU seconds per item and the items/s they allow on free cores; per-stage medians;
the machine's load average, because other work on the cores slows the wall-clock figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from sim.dataset import GenerateConfig, ItemRenderer, generate
from sim.preview import flat_field, pseudo_colour
from sim.scene import Preset, build_item

RESULTS = Path(__file__).resolve().parent / "results"


def _cpu_s() -> float:
    """User + system CPU seconds of this process and its finished children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def stage_times(preset: Preset, n: int = 8) -> dict[str, float]:
    """Median milliseconds per stage over ``n`` items, in this process."""
    with tempfile.TemporaryDirectory() as tmp:
        r = ItemRenderer(GenerateConfig(n=n, seed=11, preset=preset, workers=1), Path(tmp))
        times: dict[str, list[float]] = {k: [] for k in ("scene", "physics", "preview", "camera", "item_total")}
        for i in range(n):
            rng = np.random.default_rng(i)
            t0 = time.perf_counter()
            truth = build_item(rng, preset, r.scene, i)
            t1 = time.perf_counter()
            raw = r.scanner.render(truth.path_mm, rng)
            t2 = time.perf_counter()
            pseudo_colour(*flat_field(raw, r.dark, r.air), r.zlookup)
            t3 = time.perf_counter()
            if r._camera is not None:
                from sim.camera import PlacedFootprint

                r._camera.render(r._camera.view_centre_travel_mm() + truth.footprints[0].centre_y_mm,
                                 [PlacedFootprint(f, 0.0) for f in truth.footprints], rng=rng)
            t4 = time.perf_counter()
            r.render(i)
            t5 = time.perf_counter()
            for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                times[k].append(v * 1000.0)
        return {f"{k}_ms": round(statistics.median(v), 1) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--preset", default="parcels", choices=[p.value for p in Preset])
    ap.add_argument("--no-camera", action="store_true")
    args = ap.parse_args()
    preset = Preset(args.preset)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        config = GenerateConfig(n=args.n, seed=1, preset=preset, workers=args.workers, camera=not args.no_camera)
        cpu0 = _cpu_s()
        t0 = time.perf_counter()
        generate(config, Path(tmp) / "ds")
        wall = time.perf_counter() - t0
        cpu = _cpu_s() - cpu0
        size_mb = sum(f.stat().st_size for f in (Path(tmp) / "ds").rglob("*") if f.is_file()) / 1e6
    result = {
        "benchmark": "sim_generate",
        "preset": str(preset),
        "n": args.n,
        "workers": args.workers,
        "camera": not args.no_camera,
        "wall_s": round(wall, 2),
        "items_per_s": round(args.n / wall, 2),
        "hours_for_10000_items": round(10_000 / (args.n / wall) / 3600, 2),
        # CPU seconds per item over parent and workers: what the cores spend, whatever else runs beside us.
        "cpu_s_per_item": round(cpu / args.n, 3),
        "items_per_s_if_cores_free": round(min(args.workers, os.cpu_count() or 1) * args.n / cpu, 2),
        "dataset_mb_per_item": round(size_mb / args.n, 2),
        "stages_single_process": stage_times(preset),
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"sim_{preset}{'_nocamera' if args.no_camera else ''}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
