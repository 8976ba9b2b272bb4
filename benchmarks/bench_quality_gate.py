"""Benchmark: the image-quality gate's defaults on normal virtual-scanner items (no false UNSCREENED).

Issue 29 asks that the gate (``edge.condition.quality``) never refuse a normal item: every item here is a normal
scan (X-ray on, no dropped lines, no dead channels beyond those the flat-field knows), so every finding is a false
UNSCREENED. Items come from several virtual scanners (seeds: each has its own channel gains and offsets) and
all three presets, with threats at the usual rate; each is flat-fielded with its own scanner's dark
and air references (as ``edge calibrate flatfield`` would capture them) and judged with the default
``QualityConfig``. Besides the count of findings, the margins are reported: the smallest lit fraction (no_xray
fires below 5%), the largest fraction of dark/constant lines and channels, and of full-scale pixels, so one can
see how far the defaults are from firing. Results go to ``benchmarks/results/bench_quality_gate.json``.

Run:  .venv/bin/python benchmarks/bench_quality_gate.py [--items 1000] [--seeds 0 1 2 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from calib.flatfield import ReferenceLines, compute_flatfield
from edge.condition.flatfield import FlatFieldCorrector
from edge.condition.quality import QualityGate
from edge.config.condition import QualityConfig
from sim.dataset import ItemStream
from sim.scene import Preset

RESULTS = Path(__file__).resolve().parent / "results" / "bench_quality_gate.json"


def margins(low: np.ndarray, high: np.ndarray, t_low: np.ndarray, t_high: np.ndarray,
            cfg: QualityConfig) -> dict[str, float]:
    """The measures the gate thresholds, for one item (to show how far from firing the defaults are)."""
    dark = np.float32(cfg.dark_transmission)
    rows = (t_high.max(axis=1) <= dark) | (t_low.max(axis=1) <= dark)
    cols = (t_high.max(axis=0) <= dark) | (t_low.max(axis=0) <= dark)
    full = cfg.full_scale_counts
    return {
        "lit_fraction": float(min(np.count_nonzero(t_high > dark), np.count_nonzero(t_low > dark)) / t_high.size),
        "dark_line_fraction": float(rows.mean()),
        "dark_column_fraction": float(cols.mean()),
        "saturated_fraction": float(max(np.count_nonzero(low >= full), np.count_nonzero(high >= full)) / high.size),
    }


def run(items: int, seeds: list[int], threat_rate: float) -> dict[str, object]:
    cfg = QualityConfig()
    gate = QualityGate(cfg)
    presets = list(Preset)
    findings: Counter[str] = Counter()
    examples: list[dict[str, object]] = []
    worst = {"lit_fraction": 1.0, "dark_line_fraction": 0.0, "dark_column_fraction": 0.0, "saturated_fraction": 0.0}
    streams = []
    for seed in seeds:
        for preset in presets:
            stream = ItemStream(seed=seed, preset=preset, threat_rate=threat_rate)
            ff = compute_flatfield(ReferenceLines(stream.dark.low, stream.dark.high),
                                   ReferenceLines(stream.air.low, stream.air.high), f"sim seed={seed}")
            streams.append((seed, preset, stream, FlatFieldCorrector(ff)))
    started = time.monotonic()
    lines = []
    for n in range(items):
        seed, preset, stream, corrector = streams[n % len(streams)]
        raw = stream.item(n // len(streams)).raw
        t_low, t_high = corrector.apply(raw.low, 0), corrector.apply(raw.high, 1)
        lines.append(raw.high.shape[0])
        finding = gate.inspect_dual(raw.low, raw.high, t_low, t_high)
        m = margins(raw.low, raw.high, t_low, t_high, cfg)
        worst["lit_fraction"] = min(worst["lit_fraction"], m["lit_fraction"])
        for key in ("dark_line_fraction", "dark_column_fraction", "saturated_fraction"):
            worst[key] = max(worst[key], m[key])
        if finding is not None:
            findings[finding.reason.value] += 1
            examples.append({"seed": seed, "preset": preset.value, "index": n // len(streams),
                             "reason": finding.reason.value, "detail": finding.detail})
        if (n + 1) % 100 == 0:
            print(f"{n + 1}/{items} items, {sum(findings.values())} false UNSCREENED, "
                  f"{time.monotonic() - started:.0f} s", flush=True)
    return {
        "items": items,
        "seeds": seeds,
        "presets": [p.value for p in presets],
        "threat_rate": threat_rate,
        "lines_median": float(np.median(lines)),
        "lines_max": int(max(lines)),
        "false_unscreened": sum(findings.values()),
        "by_reason": dict(findings),
        "examples": examples[:20],
        "worst_margins": worst,
        "config": cfg.model_dump(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--threat-rate", type=float, default=0.2)
    args = parser.parse_args()
    result = run(args.items, args.seeds, args.threat_rate)
    result["measured"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["load_average"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("items", "false_unscreened", "by_reason", "worst_margins")}, indent=2))


if __name__ == "__main__":
    main()
