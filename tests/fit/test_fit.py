"""``edge fit`` end to end on a real audit store: a new verified bundle with its own threshold, and clear errors."""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from edge.backends import open_backend
from edge.bundles import ScorerOutputs, load_bundle
from edge.cli import app
from edge.condition.composer import compose
from edge.condition.conditioner import Conditioner
from edge.config import load_config
from edge.records import ItemMeta, RawItem
from edge.screening import ModelHolder, load_models
from edge.stages.condition import ConditionStage
from edge.stages.detect import DetectStage
from tests.fit.conftest import PADIM, REPO, FitAssets

TODAY = dt.datetime.now(dt.UTC)
SINCE = (TODAY - dt.timedelta(days=1)).strftime("%Y-%m-%d")


def _fit(assets: FitAssets, out: Path, *extra: str, audit: Path | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["fit", "--from", str(audit or assets.audit), "--since", SINCE, "--config",
                                      str(assets.config), "-o", str(out), "--threads", "2", *extra])
    return result.exit_code, result.output


def _crops(assets: FitAssets, item_ids: list[str]) -> np.ndarray:
    """The held-out items' object crops, made by the service's own stages from their saved inputs."""
    cfg = load_config(assets.config)
    models = load_models(cfg.models.model_copy(update={"scorer": None}))
    condition = ConditionStage(Conditioner.from_config(cfg.condition))
    detect = DetectStage(ModelHolder(models), cfg.models.max_objects)
    contract = load_bundle(PADIM).contract
    crops = []
    for item_id in item_ids:
        (npz,) = assets.audit.rglob(f"{item_id}.npz")
        with np.load(npz) as data:
            meta = ItemMeta(item_id, "lane1", 0, 0.0, 0.0, 0.0, 0.0, math.inf)
            detected = detect(condition(RawItem(meta, high=data["high"], low=data["low"])))
        crops.append(compose(detected.image, contract, [d.box for d in detected.detections]))
    models.close()
    return np.concatenate(crops)


def test_fit_writes_a_verified_bundle_whose_threshold_tags_95_percent_of_held_out_benign(
        fit_assets: FitAssets, tmp_path: Path) -> None:
    out = tmp_path / "padim-site"
    code, output = _fit(fit_assets, out)
    assert code == 0, output
    summary = json.loads(output[output.index("{"):])
    bundle = load_bundle(out)  # verifies every hash and the manifest's content hash
    base = load_bundle(PADIM)
    m = bundle.manifest
    assert m.name == "scorer-padim" and m.version == f"{base.manifest.version}-site.{TODAY:%Y%m%d}"
    assert m.parity is not None and m.parity.passed and not m.forced
    assert {e.backend for e in m.parity.entries} == {"onnxruntime", "openvino"}
    assert str(fit_assets.audit) in m.training_data and f"{summary['objects_fit']} benign object" in m.training_data
    assert m.thresholds["score"] == 0.5 and m.normalisation.kind == base.manifest.normalisation.kind
    assert m.normalisation.centre != base.manifest.normalisation.centre
    assert summary["records"] == len(fit_assets.item_ids) and summary["objects_fit"] >= 50
    # A handful of held-out items cannot place a 95% item operating point: none is written, and the base
    # bundle's (measured for the old Gaussian) never carries over.
    assert summary["items_holdout"] < 20
    assert summary["item_threshold"] is None and "item" not in m.thresholds
    assert "no item threshold" in m.training_data
    # The Gaussian really changed; the backbone did not.
    new, old = (onnx.load(str(b.root / "onnx_fp32" / "scorer-padim.onnx")) for b in (bundle, base))
    inits = [{i.name: numpy_helper.to_array(i) for i in g.graph.initializer} for g in (new, old)]
    assert not np.allclose(inits[0]["padim_mean"], inits[1]["padim_mean"])
    conv = next(k for k in inits[1] if k.endswith("weight") and "backbone" in k)
    np.testing.assert_array_equal(inits[0][conv], inits[1][conv])
    # Independently: the held-out items' objects through the new bundle on both runtime backends.
    crops = _crops(fit_assets, summary["holdout_items"])
    assert len(crops) == summary["objects_holdout"]
    scores = {}
    for backend in ("onnxruntime", "openvino"):
        session = open_backend(bundle, backend, "fp32", threads=2)
        out_ = session.predict(crops)
        session.close()
        assert isinstance(out_, ScorerOutputs) and out_.anomaly_map.shape == (len(crops), 1, 16, 16)
        scores[backend] = out_.score
    np.testing.assert_allclose(scores["onnxruntime"], scores["openvino"], atol=1e-4)
    n = len(crops)
    below = float(np.mean(scores["onnxruntime"] < 0.5))
    assert 0.95 - 2 / n <= below <= 0.95 + 1 / n, (below, n)
    assert np.sum(scores["onnxruntime"] >= 0.5) >= 1
    # The same crops on the old bundle are judged on the old (simulation) scale: the two differ.
    old_session = open_backend(base, "onnxruntime", "fp32", threads=2)
    old_scores = old_session.predict(crops)
    old_session.close()
    assert isinstance(old_scores, ScorerOutputs)
    assert not np.allclose(old_scores.score, scores["onnxruntime"])


def test_only_clear_records_in_the_range_are_used(fit_assets: FitAssets, tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    shutil.copytree(fit_assets.audit, audit)
    for path in sorted(audit.rglob("*.json"))[:2]:
        body = json.loads(path.read_text())
        body["verdict"] = "alarm"
        path.write_text(json.dumps(body))
    code, output = _fit(fit_assets, tmp_path / "out", "--min-objects", "10", audit=audit)
    assert code == 0, output
    assert json.loads(output[output.index("{"):])["records"] == len(fit_assets.item_ids) - 2


@pytest.mark.parametrize("case", ["future", "no_inputs", "no_clear", "too_few", "not_padim", "out_exists",
                                  "out_is_base", "bad_date"])
def test_bad_inputs_give_clear_errors(fit_assets: FitAssets, tmp_path: Path, case: str) -> None:
    audit, out, extra = fit_assets.audit, tmp_path / "out", []
    since = SINCE
    if case == "future":
        since = (TODAY + dt.timedelta(days=3)).strftime("%Y-%m-%d")
        expected = "no audit records decided from"
    elif case in ("no_inputs", "no_clear"):
        audit = tmp_path / "audit"
        shutil.copytree(fit_assets.audit, audit)
        for path in audit.rglob("*.npz" if case == "no_inputs" else "*.json"):
            if case == "no_inputs":
                path.unlink()
            else:
                path.write_text(json.dumps({**json.loads(path.read_text()), "verdict": "unscreened"}))
        expected = "enable `audit: save_inputs: true`" if case == "no_inputs" else "is CLEAR"
    elif case == "too_few":
        extra, expected = ["--min-objects", "100000"], "at least 100000 are needed"
    elif case == "not_padim":
        extra, expected = ["--bundle", str(REPO / "models" / "scorer-stfpm")], "not a PaDiM-style scorer"
    elif case == "out_exists":
        out.mkdir()
        (out / "keep.txt").write_text("x")
        expected = "already exists"
    elif case == "out_is_base":
        out, extra, expected = PADIM, ["--force"], "never overwrites its starting bundle"
    else:
        since, expected = "last tuesday", "not a date"
    before = sorted(p.name for p in PADIM.rglob("*"))
    result = CliRunner().invoke(app, ["fit", "--from", str(audit), "--since", since, "--config",
                                      str(fit_assets.config), "-o", str(out), *extra])
    assert result.exit_code == 1, result.output
    assert expected in result.output, result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in PADIM.rglob("*")) == before
    load_bundle(PADIM)
    if case == "out_exists":
        assert (out / "keep.txt").read_text() == "x"


def test_item_threshold_is_the_95_percent_point_of_held_out_item_maxima() -> None:
    from edge_tools.fit.refit import _item_threshold

    rng = np.random.default_rng(0)
    per_item = [int(k) for k in rng.integers(1, 9, 40)]
    maxima = rng.permutation(np.linspace(0.1, 0.9, 40)).astype(np.float32)
    # Each item's objects score at or below its maximum, which one of them reaches.
    scores = np.concatenate([np.r_[m, rng.uniform(0.0, m, k - 1)] for m, k in zip(maxima, per_item, strict=True)])
    t = _item_threshold(scores.astype(np.float32), per_item)
    assert t is not None
    clear = np.sort(maxima.astype(np.float64))[:38]  # 95% of 40 items; compared in float64, as the service does
    assert clear[-1] < t <= np.nextafter(clear[-1], 1.0)
    assert np.mean(maxima.astype(np.float64) < t) == 0.95
    assert _item_threshold(scores[:per_item[0]], per_item[:1]) is None
    saturated = np.minimum(scores * 10, 1.0).astype(np.float32)  # most item maxima at the clipped top
    assert _item_threshold(saturated, per_item) is None
