"""Multi-scanner paired validation: the statistics (edge_tools.eval.pooled), and the benchmark scanners refused
(edge_tools.eval.validation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_tools.eval.metrics import auroc
from edge_tools.eval.pooled import paired_comparison
from edge_tools.eval.validation import main, markdown


def _items(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.5
    base = rng.normal(0, 1, n) + 0.8 * labels  # a mediocre scorer
    groups = np.where(np.arange(n) < n // 2, 103, 104)
    return labels, base, groups


def test_a_scorer_compared_with_itself_differs_by_exactly_zero() -> None:
    labels, base, groups = _items()
    rows = paired_comparison(["a", "a again"], [base, base.copy()], labels, groups, resamples=200)
    assert rows[1].diff == 0.0 and rows[1].diff_interval == (0.0, 0.0)
    assert rows[0].auroc_m == pytest.approx(auroc(base, labels))
    lo, hi = rows[0].interval
    assert lo < rows[0].auroc_m < hi and hi - lo < 0.2


def test_pairing_resolves_a_small_consistent_gain_that_unpaired_intervals_cannot() -> None:
    """A candidate = the baseline plus a little signal on every item: the two AUROC intervals overlap, but the
    paired difference's interval excludes zero (item difficulty cancels out of the difference)."""
    labels, base, groups = _items()
    better = base + 0.25 * labels
    rows = paired_comparison(["base", "better"], [base, better], labels, groups, resamples=500)
    assert rows[1].diff > 0 and rows[1].diff_interval[0] > 0
    assert rows[1].interval[0] < rows[0].interval[1]  # unpaired: overlapping
    # per scanner: each half of the items on its own
    half = groups == 103
    assert rows[1].per_scanner[103] == pytest.approx(auroc(better[half], labels[half]))
    text = markdown(rows, [103, 104], 200)
    assert "| better |" in text and "seed 104" in text


def test_one_class_only_is_an_error_not_a_number() -> None:
    labels, base, groups = _items()
    with pytest.raises(ValueError, match="threat and benign"):
        paired_comparison(["a"], [base], np.ones_like(labels), groups)


@pytest.mark.parametrize(("seeds", "reserved"), [("103,101", "101"), ("202,104", "202")])
def test_the_benchmark_scanners_are_refused(seeds: str, reserved: str, capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["models/scorer-stfpm", "--seeds", seeds, "--work", str(tmp_path)])
    err = capsys.readouterr().err
    assert f"seed(s) {reserved} belong to the benchmark of docs/results.md" in err
    assert not any(tmp_path.iterdir())  # refused before anything was generated


@pytest.mark.parametrize(("extra", "says"), [
    (["--seeds", "103,103"], "give each scanner once"),
    (["--seeds", "10x"], "expected integers"),
    (["--n", "0"], "at least one item"),
    (["--bundle-first", "/nonexistent-bundle"], "/nonexistent-bundle: "),
])
def test_bad_arguments_are_refused_before_anything_is_generated(extra: list[str], says: str,
                                                                capsys: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    # the same checks as edge_tools.eval.item_thresholds (edge_tools.eval.scanner_cli): a repeated seed would count its
    # items twice in the pooled figures, a missing bundle would fail only after minutes of generating scanners
    bundles = ["models/scorer-stfpm"]
    if extra[0] == "--bundle-first":  # a second positional bundle (after an option argparse would not take it)
        bundles, extra = [*bundles, *extra[1:]], []
    with pytest.raises(SystemExit) as exc:
        main([*bundles, "--work", str(tmp_path), *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "unrecognized" not in err
    assert not any(tmp_path.iterdir())
