"""Item thresholds measured on the benign items of several virtual scanners at once, written into bundle copies.

Why: ``edge eval --write-item-threshold`` sets ``thresholds.item`` on one validation set, i.e. one scanner. A
threshold set on one scanner's benign items did not hold on others: ``scorer-stfpm`` 2.1's, set on 200 benign
items of seed 102, alarmed on 9.2% of the benign items pooled over the four benchmark scanners, not 5%
(docs/results.md, Table 5), because score levels move with each scanner's calibration and item stream. Pooling
the benign items of several scanners puts the shipped operating point where 95% of benign items clear across
scanners; a site still sets its own with ``edge eval --write-item-threshold`` or ``edge fit``.

Run::

    .venv/bin/python -m edge_tools.eval.item_thresholds --work /tmp/xray-op --seeds 102,301,302,303 --n 200 \
        --out /tmp/xray-op/bundles --bundle-version '{version}.1' models/scorer-stfpm models/scorer-padim

Each seed is its own virtual scanner, calibrated as on site, with ``n`` benign items (threat rate 0), generated
once and kept in ``--work``; every bundle runs through the whole pipeline (the reference detector unless
``--detector``). Prints, per bundle, the bundle's item threshold and the pooled one with the share of each
scanner's benign items that alarm at either. Must not: use a benchmark scanner (``BENCHMARK_SEEDS``), or a
set with threats.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.bundles.loader import load_bundle
from edge.bundles.outputs import ITEM_THRESHOLD_KEY
from edge.errors import BundleError
from edge_tools.eval.operating_point import pooled_item_threshold, write_threshold
from edge_tools.eval.pooled import PooledRun, run_scanners
from edge_tools.eval.scanner_cli import add_scanner_arguments, scanner_run
from edge_tools.eval.scanners import prepare_scanner

DEFAULT_SEEDS = (102, 301, 302, 303)
"""Seed 102 set the shipped item thresholds alone until 2026-11-23; 301–303 are used for nothing else."""


@dataclass(frozen=True, slots=True)
class PooledThreshold:
    """One bundle's item threshold over the pooled benign items, and each scanner's benign alarm rate."""

    bundle: Path
    threshold: float
    previous: float | None
    alarm_rate: dict[int, float]
    previous_alarm_rate: dict[int, float]


def pooled_thresholds(run: PooledRun, bundles: Sequence[Path]) -> list[PooledThreshold]:
    """Each bundle's 95%-benign item threshold over every scanner's items (all benign) of ``run``.

    Raises:
        BundleError: a set holds threats, too few benign items, or an UNSCREENED benign item.
    """
    if run.labels.any():
        raise BundleError(f"{int(run.labels.sum())} items with threats: item thresholds are set on benign items")
    out = []
    for path, result in zip(bundles, run.bundles, strict=True):
        threshold = pooled_item_threshold(result.max_scores, f"{path} on scanners {list(run.seeds)}")
        stored = load_bundle(path, verify_hashes=False).manifest.thresholds.get(ITEM_THRESHOLD_KEY)
        previous = float(stored) if stored is not None else None

        def rates(t: float | None, scores: np.ndarray = result.max_scores) -> dict[int, float]:
            if t is None:
                return {}
            return {seed: float((scores[run.groups == seed] >= t).mean()) for seed in run.seeds}

        out.append(PooledThreshold(path, threshold, previous, rates(threshold), rates(previous)))
    return out


def markdown(rows: Sequence[PooledThreshold], seeds: Sequence[int], n: int) -> str:
    """Per bundle: previous and pooled item threshold, benign alarm rate per scanner at each."""
    head = "| bundle | item threshold | " + " | ".join(f"seed {s}" for s in seeds) + " | pooled |"
    lines = [f"{len(seeds)} virtual scanners x {n} benign items; share of benign items that alarm", "", head,
             "|" + "---|" * (3 + len(seeds))]
    for r in rows:
        for label, t, rate in (("bundle's", r.previous, r.previous_alarm_rate), ("pooled", r.threshold,
                                                                                 r.alarm_rate)):
            if t is None:
                continue
            cells = " | ".join(f"{100 * rate[s]:.1f}%" for s in seeds)
            pooled = 100 * float(np.mean([rate[s] for s in seeds]))
            lines.append(f"| {r.bundle.name} ({label}) | {t:.4f} | {cells} | {pooled:.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Set scorer bundles' item thresholds on several virtual scanners.")
    add_scanner_arguments(parser, Path("/tmp/xray-op"), DEFAULT_SEEDS, "scorer/classifier bundles",
                          "benign items per scanner")
    parser.add_argument("--out", type=Path, default=None, help="write a re-thresholded copy of each bundle to "
                        "OUT/<bundle name> (replaced if present); without it, only print the table")
    parser.add_argument("--bundle-version", default=None, help="the copies' version; {version} stands for each "
                        "bundle's own (default {version}-op.<date>)")
    args = parser.parse_args(argv)
    sr = scanner_run(parser, args, "set thresholds")
    seeds = sr.seeds
    scanners = [prepare_scanner(seed, sr.n, sr.work / f"seed-{seed}", sr.detector, sr.bundles[0], sr.workers,
                                threat_rate=0.0) for seed in seeds]
    run = run_scanners(scanners, sr.bundles, sr.workers)
    try:
        rows = pooled_thresholds(run, sr.bundles)
    except BundleError as exc:
        parser.exit(1, f"edge_tools.eval.item_thresholds: {exc}\n")
    print(markdown(rows, seeds, sr.n))
    if args.out is None:
        return
    source = f"{len(run.labels)} benign items of virtual scanners {', '.join(map(str, seeds))} ({sr.n} each)"
    for r in rows:
        try:
            bundle = write_threshold(r.bundle, args.out / r.bundle.name, r.threshold, source,
                                     run.bundles[0].reports[0].detector, args.bundle_version, overwrite=True,
                                     measured_by="edge_tools.eval.item_thresholds")
        except BundleError as exc:
            parser.exit(1, f"edge_tools.eval.item_thresholds: {exc}\n")
        print(f"wrote {bundle.root} ({bundle.manifest.name}@{bundle.manifest.version}): thresholds.item "
              f"{r.threshold:.6g}; unsigned: sign it (edge-export sign {bundle.root} --key KEYFILE) before a box "
              "will run it")


if __name__ == "__main__":
    main()
