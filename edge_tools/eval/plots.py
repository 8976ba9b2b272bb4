"""Optional PNG plots of an evaluation: ROC curves (max and mean bag score), bag-score histograms, per-kind recall.

Where it sits: called by ``edge eval --plots`` after the reports are built. matplotlib is an optional extra
(``pip install 'xray-edge[plots]'``); without it ``write_plots`` raises ``PlotsUnavailable`` with that advice and
the evaluation itself is unaffected. Must not: be imported by anything the service runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_tools.eval.records import Dataset, ItemOutcome
from edge_tools.eval.report import EvalReport, bag_scores


class PlotsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotsUnavailable("PNG plots need matplotlib: pip install 'xray-edge[plots]' (or matplotlib); "
                               "the JSON and Markdown reports do not") from None
    return plt


def write_plots(reports: Sequence[EvalReport], runs: Sequence[tuple[Dataset, Sequence[ItemOutcome]]],
                out: Path) -> list[Path]:
    """Write ``roc.png``, ``scores.png`` and ``per_kind.png`` under ``out``; returns the files written.

    ``runs`` pairs each report with the dataset and outcomes it came from (same order as ``reports``).
    """
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for r in reports:
        for ax, roc, title in ((axes[0], r.roc_m, "AUROC_M (max)"), (axes[1], r.roc_a, "AUROC_A (mean)")):
            if roc is not None:
                ax.plot(roc.fpr, roc.tpr, label=f"{r.scorer or 'detector only'}")
            ax.set_title(title)
            ax.set_xlabel("false-positive rate (benign items)")
            ax.set_ylabel("true-positive rate (threat items)")
    for ax in axes:
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.legend(loc="lower right", fontsize=8)
    written.append(_save(fig, plt, out / "roc.png"))
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4), squeeze=False)
    for ax, r, (dataset, outcomes) in zip(axes[0], reports, runs, strict=True):
        labels = np.asarray([i.truth.threat for i in dataset.items], bool)
        scores = bag_scores(outcomes)
        finite = np.isfinite(scores)
        ax.hist([scores[finite & ~labels], scores[finite & labels]], bins=30, label=["benign", "threat"])
        if r.at_benign95 is not None and r.at_benign95.threshold is not None:
            ax.axvline(r.at_benign95.threshold, color="k", ls="--", lw=0.8, label="95% benign")
        ax.set_title(f"bag score (max): {r.scorer or 'detector only'}")
        ax.legend(fontsize=8)
    written.append(_save(fig, plt, out / "scores.png"))
    kinds = sorted({k.kind for r in reports for k in r.per_kind})
    if kinds:
        fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(kinds) * len(reports)), 4))
        width = 0.8 / max(1, len(reports))
        for n, r in enumerate(reports):
            rec = {k.kind: (k.recall or 0.0) for k in r.per_kind}
            ax.bar(np.arange(len(kinds)) + n * width, [rec.get(k, 0.0) for k in kinds], width,
                   label=r.scorer or "detector only")
        ax.set_xticks(np.arange(len(kinds)) + 0.4 - width / 2, kinds, rotation=45, ha="right")
        ax.set_ylabel("item recall")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        written.append(_save(fig, plt, out / "per_kind.png"))
    return written


def _save(fig: Any, plt: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
