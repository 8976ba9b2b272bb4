"""Choose between scorer bundles on several virtual scanners at once: pooled, paired AUROC_M with intervals.

Why: one 200-item set resolves only about ±0.07 in AUROC_M, and scanners and item streams differ. A fused scorer
picked on one validation scanner (seed 103: +0.061 over ``scorer-stfpm``) read −0.019 pooled over three other
scanners and −0.010 on the seed-101 benchmark (docs/models.md, "Synthetic metal inserts"). So candidates are
compared here on the items of several scanners pooled, paired (every bundle scores the same items through the
same detector boxes, and the interval is of the *difference*, resampled over items; ``edge_tools.eval.pooled``), and
never on the benchmark scanners of docs/results.md (seeds 101, 201–203), which stay for the final measurement.

Run::

    .venv/bin/python -m edge_tools.eval.validation --work /tmp/xray-val --seeds 103,104,105,106 --n 200 \
        models/scorer-stfpm /tmp/candidate-a /tmp/candidate-b

Each seed is its own virtual scanner and item stream (threat rate 0.5, parcels), calibrated as on site (flat-field,
step wedge), generated once and kept in ``--work``. The first bundle is the baseline; the table gives each
bundle's pooled AUROC_M, its interval, its paired difference to the baseline with interval, and its AUROC_M per
scanner. Must not: be used on a benchmark scanner (``edge_tools.eval.scanners.BENCHMARK_SEEDS``) or train anything.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from edge_tools.eval.pooled import Comparison, paired_comparison, run_scanners
from edge_tools.eval.scanner_cli import add_scanner_arguments, scanner_run
from edge_tools.eval.scanners import BENCH_THREAT_RATE, prepare_scanner

DEFAULT_SEEDS = (103, 104, 105, 106)


def markdown(rows: Sequence[Comparison], seeds: Sequence[int], n: int) -> str:
    head = ("| bundle | AUROC_M pooled | 95% interval | Δ vs first | Δ 95% interval | "
            + " | ".join(f"seed {s}" for s in seeds) + " |")
    lines = [f"{len(seeds)} virtual scanners x {n} items (threat rate {BENCH_THREAT_RATE}), paired bootstrap over "
             "items", "", head, "|" + "---|" * (5 + len(seeds))]
    for r in rows:
        per = " | ".join(r.per_scanner_cells(seeds))
        lines.append(f"| {r.bundle} | {r.auroc_m:.3f} | {r.interval[0]:.3f}–{r.interval[1]:.3f} | {r.diff:+.3f} | "
                     f"{r.diff_interval[0]:+.3f} … {r.diff_interval[1]:+.3f} | {per} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Compare scorer bundles on several virtual scanners, paired.")
    add_scanner_arguments(parser, Path("/tmp/xray-val"), DEFAULT_SEEDS,
                          "scorer/classifier bundles; the first is the baseline", "items per scanner")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    sr = scanner_run(parser, args, "validate")
    seeds = sr.seeds
    scanners = [prepare_scanner(seed, sr.n, sr.work / f"seed-{seed}", sr.detector, sr.bundles[0], sr.workers)
                for seed in seeds]
    run = run_scanners(scanners, sr.bundles, sr.workers)
    rows = paired_comparison([str(b) for b in sr.bundles], [b.max_scores for b in run.bundles], run.labels,
                             run.groups)
    print(markdown(rows, seeds, sr.n))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
