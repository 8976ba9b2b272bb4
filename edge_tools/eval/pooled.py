"""Scorer bundles run on several virtual scanners, their items pooled: AUROC_M with bootstrap intervals, paired
differences, and the service's decisions counted over every scanner.

Why: one 200-item set resolves only about ±0.07 in AUROC_M, and scanners and item streams differ (the shipped
``scorer-stfpm`` read 0.645–0.784 across nine scanners; docs/models.md). Both the published benchmark
(``edge_tools.eval.reference``) and model choice (``edge_tools.eval.validation``) therefore read figures pooled over
scanners; they differ only in which scanners (``edge_tools.eval.scanners``).

Pairing: every bundle scores the same items through the same detector boxes, and a difference's interval is of
the *difference*, resampled over items, so item difficulty cancels out of it.

Must not: train anything, or choose scanners (callers do).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_tools.eval.cli import evaluate
from edge_tools.eval.datasets import read_dataset
from edge_tools.eval.metrics import ItemCounts, auroc, item_counts
from edge_tools.eval.records import ItemOutcome
from edge_tools.eval.report import EvalReport, bag_scores
from edge_tools.eval.runner import RunSettings
from edge_tools.eval.scanners import Scanner


@dataclass(frozen=True, slots=True)
class Comparison:
    """One bundle's pooled AUROC_M (bag score = max object score) and its paired difference to the baseline."""

    bundle: str
    auroc_m: float
    interval: tuple[float, float]
    diff: float
    diff_interval: tuple[float, float]
    per_scanner: dict[int, float | None]

    def per_scanner_cells(self, seeds: Sequence[int]) -> list[str]:
        """AUROC_M of each scanner in ``seeds`` order, 3 decimals, "–" where it is undefined (one class only)."""
        return ["–" if self.per_scanner.get(s) is None else f"{self.per_scanner[s]:.3f}" for s in seeds]


@dataclass(frozen=True, slots=True)
class BundleRun:
    """One bundle on every scanner: its per-scanner reports and its pooled per-item readings (scanner order)."""

    reports: tuple[EvalReport, ...]
    max_scores: np.ndarray
    mean_scores: np.ndarray
    alarms: np.ndarray

    def counts(self, labels: np.ndarray) -> ItemCounts:
        """The service's decisions (each bundle's own threshold; UNSCREENED alarms) over every scanner."""
        return item_counts(labels, self.alarms)


@dataclass(frozen=True, slots=True)
class PooledRun:
    """Items of several scanners, pooled in scanner order: truth, scanner seed of each item, one run per bundle."""

    seeds: tuple[int, ...]
    labels: np.ndarray
    groups: np.ndarray
    bundles: tuple[BundleRun, ...]


def run_scanners(scanners: Sequence[Scanner], bundles: Sequence[Path | None], workers: int) -> PooledRun:
    """Every bundle (a path, or None for the detector alone) through the whole pipeline on every scanner."""
    labels: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    per_bundle: list[list[tuple[EvalReport, list[ItemOutcome]]]] = [[] for _ in bundles]
    for scanner in scanners:
        dataset = read_dataset(scanner.data)
        labels.append(np.asarray([i.truth.threat for i in dataset.items], bool))
        groups.append(np.full(len(dataset.items), scanner.seed))
        for k, bundle in enumerate(bundles):
            name = "detector only" if bundle is None else bundle.name
            per_bundle[k].append(evaluate(dataset, RunSettings(scanner.config, bundle, bundle is None), workers,
                                          f"seed {scanner.seed}: {name}"))
    runs = tuple(BundleRun(tuple(r for r, _ in runs), np.concatenate([bag_scores(o) for _, o in runs]),
                           np.concatenate([bag_scores(o, mean=True) for _, o in runs]),
                           np.concatenate([[x.alarmed for x in o] for _, o in runs]).astype(bool))
                 for runs in per_bundle)
    return PooledRun(tuple(s.seed for s in scanners), np.concatenate(labels), np.concatenate(groups), runs)


def paired_comparison(names: Sequence[str], scores: Sequence[np.ndarray], labels: np.ndarray, groups: np.ndarray,
                      resamples: int = 2000, seed: int = 0) -> list[Comparison]:
    """AUROC_M of every score vector (the same items, in the same order) with 95% bootstrap intervals; the
    difference to ``scores[0]`` is computed on each resample, so item difficulty cancels out of its interval.
    ``groups`` holds each item's scanner seed (per-scanner figures)."""
    y = np.asarray(labels, bool)
    if not y.any() or y.all():
        raise ValueError("AUROC needs threat and benign items")
    rng = np.random.default_rng(seed)
    draws = [b for b in (rng.integers(0, len(y), len(y)) for _ in range(resamples)) if y[b].any() and not y[b].all()]
    base = np.array([auroc(scores[0][b], y[b]) or 0.0 for b in draws])
    first = auroc(scores[0], y) or 0.0
    out = []
    for name, s in zip(names, scores, strict=True):
        boot = np.array([auroc(s[b], y[b]) or 0.0 for b in draws])
        diff = boot - base
        per = {int(g): auroc(s[groups == g], y[groups == g]) for g in np.unique(groups)}
        value = auroc(s, y) or 0.0  # never None: both classes are present
        out.append(Comparison(name, value, (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))),
                              value - first, (float(np.quantile(diff, 0.025)), float(np.quantile(diff, 0.975))),
                              per))
    return out
