"""Which detector a scorer's item threshold was measured through is bundle.yaml's ``item_detector`` key
(``{name, version, sha256}``), read by the runtime; the ``[item threshold ...; detector name@version]`` notes prefix
is only a fallback for bundles made before the key (the reference bundles in ``models/``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge.bundles.loader import load_bundle
from edge.bundles.manifest import DetectorRef, check_consistency, manifest_from_dict, manifest_to_dict, seal
from edge.bundles.outputs import item_threshold_detector, item_threshold_note
from edge.bundles.writer import rewrite_manifest
from edge.errors import BundleError
from edge.screening import _stale_item_threshold

REPO = Path(__file__).resolve().parents[2]
SCORER = REPO / "models" / "scorer-stfpm"
DETECTOR = REPO / "models" / "detector-agnostic"


def test_reference_bundles_fall_back_to_their_notes() -> None:
    scorer = load_bundle(SCORER).manifest
    assert scorer.item_detector is None
    assert "item_detector" not in manifest_to_dict(scorer)  # old bundles serialise (and hash, sign) as before
    assert scorer.item_threshold_detector() == item_threshold_detector(scorer.notes) is not None


def test_the_structured_key_round_trips_and_wins_over_the_notes(tmp_path: Path) -> None:
    detector = load_bundle(DETECTOR).manifest
    bundle = load_bundle(SCORER)
    notes = item_threshold_note(0.7, "test", "some-other-detector@9") + "rest"
    out = rewrite_manifest(bundle, tmp_path / "scorer", thresholds={**bundle.manifest.thresholds, "item": 0.7},
                           version="2.0", notes=notes, item_detector=DetectorRef.of(detector))
    m = out.manifest
    assert m.item_detector == DetectorRef(detector.name, detector.version, detector.content_sha256)
    assert m.item_threshold_detector() == f"{detector.name}@{detector.version}"
    assert "item_detector:" in (out.root / "bundle.yaml").read_text()
    assert manifest_from_dict(manifest_to_dict(m)) == m
    # a later rewrite that does not re-measure keeps the record
    again = rewrite_manifest(out, tmp_path / "again", thresholds=m.thresholds, version="2.1", notes=m.notes)
    assert again.manifest.item_detector == m.item_detector


def test_an_item_detector_without_an_item_threshold_is_refused() -> None:
    m = load_bundle(SCORER).manifest
    broken = seal(replace(m, thresholds={k: v for k, v in m.thresholds.items() if k != "item"},
                          item_detector=DetectorRef("d", "1")))
    with pytest.raises(BundleError, match=r"item_detector: names the detector thresholds\.item was measured"):
        check_consistency(broken)


def test_a_label_parses_to_a_reference() -> None:
    assert DetectorRef.parse("detector-agnostic@1.0.op-2") == DetectorRef("detector-agnostic", "1.0.op-2")
    with pytest.raises(ValueError, match="name@version"):
        DetectorRef.parse("detector-agnostic")


def _loaded(manifest: object) -> SimpleNamespace:
    return SimpleNamespace(bundle=SimpleNamespace(manifest=manifest))


def test_the_service_flags_a_threshold_measured_through_another_or_rebuilt_detector() -> None:
    detector = load_bundle(DETECTOR).manifest
    scorer = load_bundle(SCORER).manifest
    same = replace(scorer, item_detector=DetectorRef.of(detector))
    assert _stale_item_threshold(_loaded(same), _loaded(detector)) is None  # type: ignore[arg-type]
    other = replace(scorer, item_detector=DetectorRef("detector-classes", "1.0"))
    note = _stale_item_threshold(_loaded(other), _loaded(detector))  # type: ignore[arg-type]
    assert note is not None and "measured through detector-classes@1.0" in note
    rebuilt = replace(scorer, item_detector=DetectorRef(detector.name, detector.version, "0" * 64))
    note = _stale_item_threshold(_loaded(rebuilt), _loaded(detector))  # type: ignore[arg-type]
    assert note is not None and "(manifest 000000000000)" in note and detector.content_sha256[:12] in note


def test_edge_eval_writes_the_detector_it_measured_through(tmp_path: Path) -> None:
    """``edge eval --write-item-threshold`` (edge_tools.eval.operating_point) records the structured key."""
    from edge_tools.eval.operating_point import write_threshold

    detector = load_bundle(DETECTOR).manifest
    label = f"{detector.name}@{detector.version}"
    out = write_threshold(SCORER, tmp_path / "scorer", 0.71, "300 benign items of test", label,
                          detector_sha256=detector.content_sha256)
    assert out.manifest.item_detector == DetectorRef.of(detector)
    assert out.manifest.item_threshold_detector() == label
    with pytest.raises(BundleError, match="not a detector name@version"):
        write_threshold(SCORER, tmp_path / "other", 0.71, "test", "ground truth boxes")
