"""The combined operating point (issue 32): chosen on benign items of validation scanners so that the union of the
signals meets the false-alarm target, and never on a benchmark scanner's items."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.config import load_config
from edge_tools.eval.scanners import BENCHMARK_SEEDS
from edge_tools.fit.combined import (
    BenchmarkItems,
    ItemSignals,
    alarms,
    choose,
    class_threshold,
    combined_scores,
    rate_threshold,
    save,
    snippet,
)

VALIDATION_SEEDS = (102, 301, 302, 303)


def _items(seed: int, n: int, threat: bool, rng: np.random.Generator) -> list[ItemSignals]:
    """Benign items: independent classifier and anomaly scores, a rare cutter detection; threat items score higher."""
    lift = 0.35 if threat else 0.0
    out = []
    for k in range(n):
        known = {"cutter": float(rng.uniform(0.25, 0.9 if threat else 0.33))} if rng.random() < 0.1 else {}
        out.append(ItemSignals(f"{seed}-{k}", seed, threat, ("dagger",) if threat else (), False, known,
                               float(min(1.0, rng.beta(2, 8) + lift)), float(min(1.0, rng.beta(3, 6) + lift))))
    return out


def _benign(rng: np.random.Generator) -> list[ItemSignals]:
    return [i for s in VALIDATION_SEEDS for i in _items(s, 150, False, rng)]


def test_the_union_of_signals_meets_the_target_not_each_signal() -> None:
    rng = np.random.default_rng(0)
    benign = _benign(rng)
    point = choose(benign, {"cutter": 0.35}, ["classifier", "anomaly"], target=0.05)
    fpr = alarms(benign, point).mean()
    assert 0.04 <= fpr <= 0.05 and point.benign_fpr == pytest.approx(fpr)
    # each signal gets only part of the budget: three 5% thresholds side by side would alarm on ~10% here
    assert point.signal_fpr["classifier"] < 0.04 and point.signal_fpr["anomaly"] < 0.04
    separate = [rate_threshold(np.asarray([i.score(s) for i in benign]), 0.05) for s in ("classifier", "anomaly")]
    assert np.mean([i.classifier >= separate[0] or i.anomaly >= separate[1] for i in benign]) > 0.08
    # on fresh benign items of other validation scanners the rate stays near the target
    fresh = [i for s in (401, 402) for i in _items(s, 500, False, rng)]
    assert alarms(fresh, point).mean() < 0.08


def test_validation_threat_items_choose_the_share_and_the_target_still_holds() -> None:
    rng = np.random.default_rng(1)
    benign = _benign(rng)
    threats = [i for s in (104, 105) for i in _items(s, 100, True, rng)]
    point = choose(benign, {}, ["classifier", "anomaly"], target=0.05, threats=threats)
    assert point.threat_recall is not None and alarms(benign, point).mean() <= 0.05
    assert point.threat_recall == pytest.approx(alarms(threats, point).mean())


@pytest.mark.parametrize("where", ["benign", "threats"])
def test_the_choice_refuses_any_benchmark_item(where: str) -> None:
    rng = np.random.default_rng(2)
    benign = _benign(rng)
    leak = _items(BENCHMARK_SEEDS[1], 1, where == "threats", rng)
    kwargs = {"threats": leak} if where == "threats" else {}
    with pytest.raises(BenchmarkItems, match="benchmark"):
        choose(benign + (leak if where == "benign" else []), {}, ["classifier", "anomaly"], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(BenchmarkItems):
        class_threshold(benign + leak, [], "cutter", ["dagger"], 0.01)
    with pytest.raises(BenchmarkItems):
        combined_scores(benign, benign + leak, {}, ["classifier"])


def test_the_command_line_refuses_benchmark_signals(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    save(_items(BENCHMARK_SEEDS[0], 50, False, rng), tmp_path / "bench.jsonl")
    save(_benign(rng), tmp_path / "val.jsonl")
    run = [sys.executable, "-m", "edge_tools.fit.combined", "choose"]
    refused = subprocess.run([*run, str(tmp_path / "val.jsonl"), str(tmp_path / "bench.jsonl")],
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "belong to the benchmark" in refused.stderr
    ok = subprocess.run([*run, str(tmp_path / "val.jsonl"), "--classifier-bundle", "/opt/c", "--scorer-bundle", "/s"],
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "threshold:" in ok.stdout


def test_the_snippet_is_a_valid_models_section(tmp_path: Path) -> None:
    point = choose(_benign(np.random.default_rng(4)), {"cutter": 0.35}, ["classifier", "anomaly"])
    path = tmp_path / "edge.yaml"
    path.write_text("site:\n  site_id: hub\n  scanner_id: lane-1\n"
                    + snippet(point, "/opt/c", "/opt/s").replace("models:\n", "models:\n  detector: /opt/d\n")
                    + "\n", encoding="utf-8")
    m = load_config(path).models
    assert m.classifier is not None and m.classifier.threshold == pytest.approx(point.classifier, abs=1e-5)
    assert m.scorer is not None and m.scorer.threshold == pytest.approx(point.anomaly, abs=1e-5)
    assert m.threat_classes == {"cutter": 0.35}


def test_rate_threshold_lets_at_most_that_share_reach_it() -> None:
    x = np.asarray([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    t = rate_threshold(x, 0.2)
    assert (x >= t).sum() == 2 and 0.8 < t <= 0.9 + 1e-12
    assert rate_threshold(x, 1.0) == -math.inf


def test_the_results_section_is_replaced_in_place_and_kept_by_the_reference_regeneration(tmp_path: Path) -> None:
    from edge_tools.eval.reference import kept_block
    from edge_tools.fit.combined import write_section

    results = tmp_path / "results.md"
    results.write_text("# Results\n\nTable 5\n", encoding="utf-8")
    write_section(results, "## Unseen\n\nfirst")
    write_section(results, "## Unseen\n\nsecond")
    write_section(results, "more", append=True)
    text = results.read_text(encoding="utf-8")
    assert text.startswith("# Results\n\nTable 5\n") and "first" not in text
    assert text.count("## Unseen") == 1 and text.index("second") < text.index("more")
    assert "second" in kept_block(text) and "Table 5" not in kept_block(text)
