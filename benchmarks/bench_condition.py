"""Benchmark: conditioning one 640 x 1500 dual-energy item, per step and end to end, on 2 cores.

Target (issue 4): flat-field + effective-Z lookup + pseudo-colour + composing one contract's input takes
<= 15 ms median on 2 cores. The item is a cluttered virtual-scanner parcel (organics, glass, aluminium, steel,
overlaps) rendered to raw 16-bit counts; calibrations come from the virtual scanner's own dark/air lines and
step wedge, exactly as ``edge calibrate flatfield`` / ``energy --from-sim`` make them. The composed contract
is a detector input (``pc``, 640 x 640, stretch); the ``hlz`` variant is measured too.
Results go to ``benchmarks/results/bench_condition.json`` with the load average (the cores are shared).

Run:  .venv/bin/python benchmarks/bench_condition.py [--repeats 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np

from calib.energy import calibrate_from_sim
from calib.flatfield import capture_from_sim, compute_flatfield
from edge.condition import Conditioner, compose
from edge.config.condition import PaletteConfig
from edge.contracts import Channel, InputContract
from sim.physics import DualEnergyScanner

RESULTS = Path(__file__).resolve().parent / "results" / "bench_condition.json"
TARGET_MS = 15.0
H, W = 1500, 640


def parcel(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A cluttered item: a cardboard box full of overlapping objects of several materials."""
    maps = {m: np.zeros((H, W), np.float32) for m in ("cardboard", "water", "pe", "glass", "aluminium", "steel")}
    maps["cardboard"][60:1440, 40:600] = 8.0
    for _ in range(40):
        m = str(rng.choice(["water", "pe", "glass", "aluminium", "steel"], p=[0.3, 0.3, 0.1, 0.15, 0.15]))
        h, w = int(rng.integers(30, 300)), int(rng.integers(20, 200))
        y, x = int(rng.integers(80, 1420 - h)), int(rng.integers(60, 580 - w))
        thick = {"water": 60, "pe": 40, "glass": 8, "aluminium": 6, "steel": 2}[m] * float(rng.uniform(0.3, 1.5))
        maps[m][y:y + h, x:x + w] += thick
    return maps


def timed(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Wall-clock median/p90/min, plus median CPU time of the process (all threads): on shared cores the
    wall clock includes waiting for other people's work, CPU time does not."""
    fn()  # warm-up
    samples, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 3), "p90_ms": round(samples[int(0.9 * len(samples))], 3),
            "min_ms": round(samples[0], 3), "cpu_median_ms": round(statistics.median(cpu), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()
    cv2.setNumThreads(2)
    load_start = os.getloadavg()[0]
    dark, air = capture_from_sim(0, 256)
    energy, _ = calibrate_from_sim(0, ["pom", "water", "aluminium", "steel"], None)
    cond = Conditioner(compute_flatfield(dark, air, "sim seed=0"), energy, PaletteConfig())
    raw = DualEnergyScanner(seed=0).render(parcel(np.random.default_rng(1)), np.random.default_rng(2))
    detector = InputContract((Channel.PC,), 640, 640)
    hlz = InputContract((Channel.HLZ,), 640, 640, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    img = cond.condition(raw.low, raw.high)

    def flatfield() -> object:
        return cond.corrector.apply(raw.low, 0), cond.corrector.apply(raw.high, 1)

    t_low, t_high = cond.corrector.apply(raw.low, 0), cond.corrector.apply(raw.high, 1)
    steps = {
        "flatfield_both_energies": timed(flatfield, args.repeats),
        "zeff_and_pseudocolour": timed(lambda: cond.from_transmission(t_low.copy(), t_high.copy()), args.repeats),
        "compose_pc_640": timed(lambda: compose(img, detector), args.repeats),
        "compose_hlz_640": timed(lambda: compose(img, hlz), args.repeats),
        "compose_hlz_20_crops_64": timed(
            lambda: compose(img, InputContract((Channel.HLZ,), 64, 64),
                            np.array([[40 + 25 * k, 100 + 60 * k, 120 + 25 * k, 200 + 60 * k] for k in range(20)])),
            args.repeats),
    }
    end_to_end = timed(lambda: compose(cond.condition(raw.low, raw.high), detector), args.repeats)
    end_to_end_hlz = timed(lambda: compose(cond.condition(raw.low, raw.high), hlz), args.repeats)
    result = {
        "benchmark": "bench_condition",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "cv2_threads": cv2.getNumThreads(),
                    "python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
                    "load_average_start": round(load_start, 2), "load_average_end": round(os.getloadavg()[0], 2)},
        "item": {"height": H, "width": W},
        "repeats": args.repeats,
        "steps": steps,
        "end_to_end_pc_640": end_to_end,
        "end_to_end_hlz_640": end_to_end_hlz,
        # What the machine does when nobody else is using it: per-step best cases added up (a lower bound,
        # reported beside the medians because the benchmark machine's cores are shared).
        "sum_of_step_minima_pc_640_ms": round(sum(steps[k]["min_ms"] for k in (
            "flatfield_both_energies", "zeff_and_pseudocolour", "compose_pc_640")), 3),
        "target_median_ms": TARGET_MS,
        "meets_target": end_to_end["median_ms"] <= TARGET_MS,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for name, s in steps.items():
        print(f"{name:28s} median {s['median_ms']:7.2f} ms  p90 {s['p90_ms']:7.2f}  min {s['min_ms']:7.2f}"
              f"  cpu {s['cpu_median_ms']:7.2f}")
    for name, s in (("end to end (pc 640)", end_to_end), ("end to end (hlz 640)", end_to_end_hlz)):
        print(f"{name:28s} median {s['median_ms']:7.2f} ms  p90 {s['p90_ms']:7.2f}  min {s['min_ms']:7.2f}"
              f"  cpu {s['cpu_median_ms']:7.2f}  (target {TARGET_MS} ms)")
    print(f"sum of step minima (pc 640): {result['sum_of_step_minima_pc_640_ms']:.2f} ms")
    print(f"load average {load_start:.2f} → {os.getloadavg()[0]:.2f}; wrote {RESULTS}")


if __name__ == "__main__":
    main()
