"""The item operating point: ``edge eval --write-item-threshold`` measures it through the whole pipeline, writes
it into a copy of the scorer bundle, and the service then decides at it (``models.operating_point``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge.bundles.loader import load_bundle, sha256_file
from edge.bundles.outputs import item_threshold_detector
from edge.bundles.writer import rewrite_manifest
from edge.cli import app
from edge.config import load_config
from edge.errors import BundleError, ConfigError
from edge.screening import load_models
from edge_tools.eval.datasets import read_dataset
from edge_tools.eval.report import bag_scores
from edge_tools.eval.runner import RunSettings, run_dataset
from sim.dataset import GenerateConfig, generate
from tests.eval.eval_helpers import EvalAssets
from tests.service.service_helpers import sign

BENIGN_ITEMS = 24


@pytest.fixture(scope="module")
def benign_set(tmp_path_factory: pytest.TempPathFactory, eval_assets: EvalAssets) -> Path:
    """Benign items only, from the eval assets' scanner (seed 3, which their calibrations belong to)."""
    out = tmp_path_factory.mktemp("benign") / "sim"
    generate(GenerateConfig(n=BENIGN_ITEMS, seed=3, threat_rate=0.0, camera=False, workers=2), out)
    return out


def _config_with(base: Path, out: Path, scorer: Path, operating_point: str | None) -> Path:
    text = base.read_text().replace(f"  scorer: {_scorer_of(base)}\n", f"  scorer: {scorer}\n")
    if operating_point is not None:
        text = text.replace("  max_objects: 6\n", f"  max_objects: 6\n  operating_point: {operating_point}\n")
    out.write_text(text)
    return out


def _scorer_of(config: Path) -> Path:
    scorer = load_config(config).models.scorer
    assert scorer is not None
    return scorer.bundle


def test_item_threshold_is_written_and_the_service_decides_at_it(eval_assets: EvalAssets, benign_set: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "op"
    result = CliRunner().invoke(app, ["eval", str(benign_set), "-c", str(eval_assets.config), "-j", "1",
                                      "--out", str(tmp_path / "report"), "--write-item-threshold", str(out),
                                      "--bundle-version", "{version}.7"])
    assert result.exit_code == 0, result.output
    source = load_bundle(eval_assets.scorer)
    written = load_bundle(out / eval_assets.scorer.name)  # verifies every hash and the sealed manifest
    sign(written.root)  # a rewritten bundle is unsigned until its owner signs it again (docs/bundles.md)
    m = written.manifest
    assert m.version == source.manifest.version + ".7"
    assert m.thresholds["score"] == source.manifest.thresholds["score"]
    # Same model files, byte for byte; only bundle.yaml changed.
    assert [(f.path, f.sha256) for f in m.files] == [(f.path, f.sha256) for f in source.manifest.files]
    assert all(sha256_file(written.root / f.path) == f.sha256 for f in m.files)
    assert m.notes.startswith(f"[item threshold {m.thresholds['item']:.6g}: 95% of {BENIGN_ITEMS} benign items")

    # The threshold sits just above the 23rd lowest of the 24 items' max object scores (the per-item rows of the
    # same run): the lowest threshold that clears 95% of them.
    rows = [json.loads(line) for line in (tmp_path / "report" / "items-1.jsonl").read_text().splitlines()]
    maxima = np.sort([-np.inf if r["score_max"] is None else r["score_max"] for r in rows])
    t = m.thresholds["item"]
    assert len(maxima) == BENIGN_ITEMS
    assert maxima[22] < t <= np.nextafter(maxima[22], np.inf)

    # The service at the item operating point alarms on at most 5% of these benign items; at the object
    # operating point it decides by thresholds.score, exactly as the original bundle does.
    dataset = read_dataset(benign_set)
    item_cfg = _config_with(eval_assets.config, tmp_path / "item.yaml", written.root, None)
    object_cfg = _config_with(eval_assets.config, tmp_path / "object.yaml", written.root, "object")
    at_item = run_dataset(dataset.items, RunSettings(item_cfg), workers=1)
    at_object = run_dataset(dataset.items, RunSettings(object_cfg), workers=1)
    original = run_dataset(dataset.items, RunSettings(eval_assets.config), workers=1)
    scores = bag_scores(at_item)
    assert np.array_equal(scores, bag_scores(original))
    assert [o.alarmed for o in at_item] == list(scores >= t)
    assert np.mean([o.alarmed for o in at_item]) <= 0.05
    assert [o.alarmed for o in at_object] == [o.alarmed for o in original]
    for outcome in at_item:
        for obj in outcome.objects:
            assert obj.threshold == pytest.approx(t)
    models = load_models(load_config(item_cfg).models)
    try:
        assert models.scorer is not None and models.scorer.threshold == pytest.approx(t)
        assert models.degraded is None  # measured through the detector in service
    finally:
        models.close()
    det = load_bundle(eval_assets.detector).manifest
    assert item_threshold_detector(m.notes) == f"{det.name}@{det.version}"

    # Another detector (the same model re-versioned) in service: the point is stale, the service says so.
    other = rewrite_manifest(load_bundle(eval_assets.detector), tmp_path / "det2", thresholds=det.thresholds,
                             version="0.2", notes="")
    sign(other.root)
    stale_cfg = tmp_path / "stale.yaml"
    stale_cfg.write_text(item_cfg.read_text().replace(f"  detector: {eval_assets.detector}\n",
                                                      f"  detector: {other.root}\n"))
    models = load_models(load_config(stale_cfg).models)
    try:
        assert models.degraded is not None
        assert f"measured through {det.name}@{det.version}" in models.degraded and "0.2" in models.degraded
        assert "edge eval --write-item-threshold" in models.degraded
    finally:
        models.close()


def test_item_threshold_needs_enough_benign_items_and_a_scorer(eval_assets: EvalAssets, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "op"
    few = runner.invoke(app, ["eval", str(eval_assets.dataset), "-c", str(eval_assets.config), "-j", "1",
                              "--write-item-threshold", str(out)])
    assert few.exit_code == 1
    assert "benign items" in few.output and "at least 20" in few.output
    assert not (out / eval_assets.scorer.name).exists()
    detector_only = runner.invoke(app, ["eval", str(eval_assets.dataset), "-c", str(eval_assets.config),
                                        "--detector-only", "--write-item-threshold", str(out)])
    assert detector_only.exit_code == 2
    assert "needs a scorer" in detector_only.output


def test_a_bundle_without_item_threshold_decides_at_its_object_threshold(eval_assets: EvalAssets) -> None:
    models = load_models(load_config(eval_assets.config).models)
    try:
        assert models.scorer is not None
        assert "item" not in models.scorer.bundle.manifest.thresholds
        assert models.scorer.threshold == models.scorer.bundle.manifest.thresholds["score"]
    finally:
        models.close()


def test_operating_point_typo_names_file_line_and_key(eval_assets: EvalAssets, tmp_path: Path) -> None:
    bad = _config_with(eval_assets.config, tmp_path / "bad.yaml", eval_assets.scorer, "items")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    text = "\n".join(err.value.problems)
    line = next(n for n, s in enumerate(bad.read_text().splitlines(), 1) if "operating_point" in s)
    assert str(bad) in text and f":{line}" in text and "models.operating_point" in text


def test_a_tampered_item_threshold_is_refused(eval_assets: EvalAssets, tmp_path: Path) -> None:
    copy = rewrite_manifest(load_bundle(eval_assets.scorer), tmp_path / "b", thresholds={"score": 0.5, "item": 0.9},
                            version="9", notes="")
    text = (copy.root / "bundle.yaml").read_text()
    assert "item: 0.9" in text
    (copy.root / "bundle.yaml").write_text(text.replace("item: 0.9", "item: 0.99"))
    with pytest.raises(BundleError):
        load_bundle(copy.root)
