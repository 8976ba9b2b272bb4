"""``edge-export renormalise``: a clipped ``centred`` scorer bundle becomes ``logistic`` with every decision at the
threshold unchanged and the order above it restored (what an item operating point needs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from edge.backends import open_backend
from edge.bundles import Role, ScorerOutputs, load_bundle
from edge.bundles.manifest import NormalisationKind, ScoreNormalisation
from edge.bundles.writer import rewrite_manifest
from edge.contracts import InputContract
from export.cli import app
from tests.service.service_helpers import build_bundle


def _scores(bundle: Path, x: np.ndarray) -> np.ndarray:
    session = open_backend(load_bundle(bundle), "onnxruntime", "fp32")
    try:
        out = session.predict(x)
    finally:
        session.close()
    assert isinstance(out, ScorerOutputs)
    return out.score


def test_centred_becomes_logistic_with_the_same_decisions(tmp_path: Path) -> None:
    tiny = load_bundle(build_bundle(Role.SCORER, tmp_path, "tiny"))
    c: InputContract = tiny.contract
    x = np.random.default_rng(0).normal(0, 1, (64, c.tensor_channels, c.height, c.width)).astype(np.float32)
    raw = _scores(tiny.root, x)  # the tiny bundle's own normalisation is 'none': raw scores
    assert tiny.manifest.normalisation.kind is NormalisationKind.NONE
    # A narrow span, so that the clipped scale ties the top quarter of the scores at 1.0.
    centre, top = float(np.median(raw)), float(np.quantile(raw, 0.75))
    span = 2 * (top - centre)
    centred = rewrite_manifest(tiny, tmp_path / "centred", thresholds={"score": 0.5}, version="1.0", notes="n",
                               normalisation=ScoreNormalisation(NormalisationKind.CENTRED, centre - span, centre,
                                                                centre))
    result = CliRunner().invoke(app, ["renormalise", str(centred.root), "-o", str(tmp_path / "logistic"),
                                      "--version", "1.1"])
    assert result.exit_code == 0, result.output
    logistic = load_bundle(tmp_path / "logistic")
    n_old, n_new = centred.manifest.normalisation, logistic.manifest.normalisation
    assert n_new.kind is NormalisationKind.LOGISTIC and logistic.manifest.version == "1.1"
    assert (n_new.low, n_new.high, n_new.centre) == (n_old.low, n_old.high, n_old.centre)
    assert logistic.manifest.thresholds == centred.manifest.thresholds
    assert logistic.manifest.notes.startswith("[normalisation logistic since 1.1 (was centred, clipped)] ")
    before, after = _scores(centred.root, x), _scores(logistic.root, x)
    np.testing.assert_array_equal(before >= 0.5, after >= 0.5)
    tied = before >= 1.0
    assert tied.sum() >= 8  # the clipped scale lost the order of these
    assert len(np.unique(after[tied])) == tied.sum()
    np.testing.assert_array_equal(np.argsort(after[tied]), np.argsort(raw[tied]))

    again = CliRunner().invoke(app, ["renormalise", str(logistic.root), "-o", str(tmp_path / "x"), "--version", "2"])
    assert again.exit_code == 1 and "not centred" in again.output
    assert not (tmp_path / "x").exists()


def test_an_item_threshold_on_the_centred_scale_is_refused(tmp_path: Path) -> None:
    """An item threshold is a point on the normalised scale it was measured on; logistic moves every score above
    0.5, so the point would silently mean another raw score."""
    tiny = load_bundle(build_bundle(Role.SCORER, tmp_path, "tiny"))
    centred = rewrite_manifest(tiny, tmp_path / "centred", thresholds={"score": 0.5, "item": 0.8}, version="1.0",
                               notes="n", normalisation=ScoreNormalisation(NormalisationKind.CENTRED, 0.0, 1.0, 1.0))
    result = CliRunner().invoke(app, ["renormalise", str(centred.root), "-o", str(tmp_path / "logistic"),
                                      "--version", "1.1"])
    assert result.exit_code == 1 and "item threshold" in result.output
    assert not (tmp_path / "logistic").exists()
