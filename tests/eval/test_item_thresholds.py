"""Item thresholds over the benign items of several virtual scanners (``python -m edge_tools.eval.item_thresholds``),
with the tiny real bundles of the eval tests on two real benign scanners: the written threshold is the 95%-benign
point of both scanners' items pooled, as ``edge eval`` scores them one scanner at a time; benchmark scanners,
sets with threats, too few items and UNSCREENED benign items are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.bundles.loader import load_bundle
from edge.bundles.outputs import ITEM_THRESHOLD_KEY
from edge.errors import BundleError
from edge_tools.eval import item_thresholds
from edge_tools.eval.cli import evaluate
from edge_tools.eval.datasets import read_dataset
from edge_tools.eval.metrics import benign_rate_threshold
from edge_tools.eval.operating_point import pooled_item_threshold
from edge_tools.eval.pooled import run_scanners
from edge_tools.eval.report import bag_scores
from edge_tools.eval.runner import RunSettings
from edge_tools.eval.scanners import Scanner
from tests.eval.eval_helpers import SEED, EvalAssets

PER_SCANNER = 12


def test_threshold_pools_the_benign_items_of_every_scanner(eval_assets: EvalAssets, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    seeds = (SEED, SEED + 1)
    item_thresholds.main([str(eval_assets.scorer), "--work", str(tmp_path), "--seeds", ",".join(map(str, seeds)),
                          "--n", str(PER_SCANNER), "--detector", str(eval_assets.detector), "--workers", "1",
                          "--out", str(tmp_path / "op"), "--bundle-version", "{version}.3"])
    printed = capsys.readouterr().out
    # each scanner alone through edge eval's own path, its benign items' bag scores pooled
    pooled = []
    for seed in seeds:
        folder = tmp_path / f"seed-{seed}"
        data = folder / f"sim-{seed}-{PER_SCANNER}-benign"
        dataset = read_dataset(data)
        assert len(dataset.items) == PER_SCANNER and not any(i.truth.threat for i in dataset.items)
        _, outcomes = evaluate(dataset, RunSettings(folder / "edge.yaml", eval_assets.scorer), 1)
        pooled.append(bag_scores(outcomes))
    scores = np.concatenate(pooled)
    want = benign_rate_threshold(scores)
    written = load_bundle(tmp_path / "op" / eval_assets.scorer.name)
    assert written.manifest.thresholds[ITEM_THRESHOLD_KEY] == pytest.approx(want, rel=1e-12)
    assert written.manifest.version == load_bundle(eval_assets.scorer).manifest.version + ".3"
    assert f"{2 * PER_SCANNER} benign items of virtual scanners {SEED}, {SEED + 1} ({PER_SCANNER} each) clear, " \
        "edge_tools.eval.item_thresholds" in written.manifest.notes
    # at most 5% of the pooled benign items alarm at it, and the table says so per scanner
    assert (scores >= want).mean() <= 0.05
    assert f"| {eval_assets.scorer.name} (pooled) | {want:.4f} |" in printed


def test_benchmark_scanners_are_refused_before_anything_is_generated(eval_assets: EvalAssets,
                                                                     tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        item_thresholds.main([str(eval_assets.scorer), "--work", str(tmp_path), "--seeds", "301,202"])
    assert exc.value.code == 2
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("extra", [["--seeds", "301,301"], ["--seeds", "3x"], ["--seeds", "301", "/nonexistent"]])
def test_bad_arguments_are_refused_before_anything_is_generated(eval_assets: EvalAssets, tmp_path: Path,
                                                                extra: list[str],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(eval_assets.scorer), "--work", str(tmp_path)]
    if len(extra) == 3:  # a second bundle: before the options (after one, argparse would not take it)
        args, extra = [str(eval_assets.scorer), extra[2], "--work", str(tmp_path)], extra[:2]
    with pytest.raises(SystemExit) as exc:
        item_thresholds.main([*args, *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized" not in err and ("/nonexistent: " in err if len(args) == 4 else "--seeds" in err)
    assert not any(tmp_path.iterdir())


def test_a_set_with_threats_is_refused(eval_assets: EvalAssets) -> None:
    run = run_scanners([Scanner(SEED, eval_assets.dataset, eval_assets.config)], [eval_assets.scorer], 1)
    assert run.labels.any()
    with pytest.raises(BundleError, match="items with threats"):
        item_thresholds.pooled_thresholds(run, [eval_assets.scorer])


def test_too_few_or_unscreened_benign_items_give_no_threshold() -> None:
    with pytest.raises(BundleError, match="at least"):
        pooled_item_threshold(np.linspace(0.0, 1.0, 19), "two scanners")
    with pytest.raises(BundleError, match="UNSCREENED"):  # 2 of 30 UNSCREENED: more than 5% cannot clear
        pooled_item_threshold(np.r_[np.linspace(0.0, 1.0, 28), np.inf, np.inf], "two scanners")
    # items without a detection (score -inf) can never alarm: they count as clearing any threshold
    assert pooled_item_threshold(np.r_[np.full(10, -np.inf), np.linspace(0.0, 1.0, 30)], "two scanners") == \
        benign_rate_threshold(np.r_[np.full(10, -np.inf), np.linspace(0.0, 1.0, 30)])
    assert pooled_item_threshold(np.linspace(0.0, 1.0, 40), "two scanners") == benign_rate_threshold(
        np.linspace(0.0, 1.0, 40))
