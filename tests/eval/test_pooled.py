"""Bundles run over several virtual scanners and pooled (edge_tools.eval.pooled, edge_tools.eval.scanners), with the
tiny real bundles of the eval tests on two real virtual scanners: each scanner's items stay in their own segment, the
pooled decisions are the per-scanner reports' decisions summed, and the docs/results.md table pools them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_tools.eval.cli import evaluate
from edge_tools.eval.datasets import read_dataset
from edge_tools.eval.pooled import run_scanners
from edge_tools.eval.reference import pooled_table
from edge_tools.eval.report import bag_scores
from edge_tools.eval.runner import RunSettings
from edge_tools.eval.scanners import Scanner, prepare_scanner
from tests.eval.eval_helpers import ITEMS, SEED, EvalAssets


def test_two_scanners_pooled_in_order_with_summed_decisions(eval_assets: EvalAssets, tmp_path: Path) -> None:
    first = Scanner(SEED, eval_assets.dataset, eval_assets.config)
    second = prepare_scanner(SEED + 1, 4, tmp_path / "seed-4", eval_assets.detector, eval_assets.scorer, 1)
    # its own items and its own calibrations, named in its own config
    assert len(read_dataset(second.data).items) == 4
    assert str(tmp_path / "seed-4" / "flatfield.npz") in second.config.read_text()

    run = run_scanners([first, second], [eval_assets.scorer, None], workers=1)

    assert run.seeds == (SEED, SEED + 1)
    assert run.groups.tolist() == [SEED] * ITEMS + [SEED + 1] * 4
    truth = [i.truth.threat for s in (first, second) for i in read_dataset(s.data).items]
    assert run.labels.tolist() == truth
    scored, alone = run.bundles
    # the second scanner's segment is what edge eval gives on that scanner alone
    _, outcomes = evaluate(read_dataset(second.data), RunSettings(second.config, eval_assets.scorer), 1)
    np.testing.assert_array_equal(scored.max_scores[ITEMS:], bag_scores(outcomes))
    # pooled decisions = the per-scanner reports' decisions, summed
    c = scored.counts(run.labels)
    per = [r.at_configured for r in scored.reports]
    assert (c.tp, c.fp, c.tn, c.fn) == tuple(sum(getattr(m, k) for m in per) for k in ("tp", "fp", "tn", "fn"))
    # the detector alone scores nothing: no AUROC row for it in the pooled table
    assert not np.isfinite(alone.max_scores).any()
    assert run.labels.any() and not run.labels.all()  # both classes (threat rate 0.5), so the table has a row
    table = pooled_table(run, ["tiny-scorer", "detector only"])
    assert "| tiny-scorer |" in table and "detector only" not in table
    assert f"({SEED} / {SEED + 1})" in table
