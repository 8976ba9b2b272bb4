"""The report's definitions on hand-made outcomes: fail-safe UNSCREENED, bag scores, per-kind recall, writers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_tools.eval.records import Dataset, DatasetItem, ItemOutcome, ItemTruth, Modality, ObjectOutcome, TruthObject
from edge_tools.eval.report import build_report, markdown_report, report_json, scorer_family

GUN = TruthObject((10, 10, 20, 20), "pistol", True)
HIDDEN = TruthObject((52, 52, 56, 56), "spring", True, "firearm", host_box=(40, 40, 80, 80))
LAPTOP = TruthObject((40, 40, 80, 80), "laptop", False)


def _obj(box: tuple[float, float, float, float], score: float | None, anomalous: bool = False,
         det: float = 0.9) -> ObjectOutcome:
    return ObjectOutcome(box, None, det, score, 0.5 if score is not None else None, anomalous)


def _dataset() -> Dataset:
    truths = [ItemTruth(True, (GUN,), ("pistol",)),            # a: gun found and localised
              ItemTruth(True, (HIDDEN, LAPTOP), ("spring",)),  # b: spring hidden in a laptop; laptop flagged
              ItemTruth(True, (GUN,), ("pistol",)),            # c: UNSCREENED (corrupt)
              ItemTruth(False, (LAPTOP,), ()),                 # d: benign, clear
              ItemTruth(False, (LAPTOP,), ()),                 # e: benign, false alarm
              ItemTruth(False, (), ())]                        # f: benign, nothing detected
    return Dataset("hand", "coco", Path("."), tuple(DatasetItem(k, Modality.IMAGE, (Path(k),), t)
                                                     for k, t in zip("abcdef", truths, strict=True)))


def _outcomes() -> list[ItemOutcome]:
    return [ItemOutcome("a", "alarm", None, "", (_obj((11, 11, 21, 21), 0.8, True),), 1.0),
            ItemOutcome("b", "alarm", None, "", (_obj((40, 40, 80, 80), 0.7, True), _obj((0, 0, 5, 5), 0.1)), 1.0),
            ItemOutcome("c", "unscreened", "corrupt_frame", "bad png", (), 0.0),
            ItemOutcome("d", "clear", None, "", (_obj((40, 40, 80, 80), 0.2), _obj((0, 0, 9, 9), 0.4)), 1.0),
            ItemOutcome("e", "alarm", None, "", (_obj((40, 40, 80, 80), 0.6, True),), 1.0),
            ItemOutcome("f", "clear", None, "", (), 1.0)]


def test_item_metrics_count_unscreened_as_alarms() -> None:
    r = build_report(_dataset(), _outcomes(), detector="det@1", scorer="stfpm@1", family="Student-Teacher")
    m = r.at_configured
    assert (m.tp, m.fp, m.tn, m.fn) == (3, 1, 2, 0)
    assert m.recall == 1.0 and m.fpr == pytest.approx(1 / 3) and m.tp_pct == 100.0
    assert r.unscreened == 1 and r.unscreened_reasons == {"corrupt_frame": 1}
    # Bag scores (max): a .8, b .7, c +inf, d .4, e .6, f -inf. Threats {a, b, c} beat every benign: AUROC_M 1.
    assert r.auroc_m == 1.0
    # Mean: a .8, b .4, c +inf | d .3, e .6, f -inf: b loses to e only -> 8/9.
    assert r.auroc_a == pytest.approx(8 / 9)
    # 95% of 3 benign items -> all 3 below the threshold, so it sits just above e's 0.6: a, b, c alarm.
    b = r.at_benign95
    assert b is not None and 0.6 < b.threshold < 0.6001  # type: ignore[operator]
    assert (b.tp, b.fp) == (3, 0) and b.benign_tagged_benign == 1.0


def test_per_kind_recall_localised_and_detected() -> None:
    r = build_report(_dataset(), _outcomes(), detector="det@1", scorer="s", family="f")
    kinds = {k.kind: k for k in r.per_kind}
    pistol, spring = kinds["pistol"], kinds["spring"]
    assert (pistol.items, pistol.alarmed, pistol.objects) == (2, 2, 2)  # c alarms as UNSCREENED
    assert pistol.localised == 1 and pistol.detected == 1  # c has no detections at all
    # The spring's own box has IoU < 0.1 with the flagged laptop, but it is hidden in that laptop: localised.
    assert (spring.alarmed, spring.localised, spring.detected) == (1, 1, 0)


def test_detector_metrics_and_writers() -> None:
    r = build_report(_dataset(), _outcomes(), detector="det@1", scorer="stfpm@1", family="Student-Teacher")
    d = r.detector_metrics
    assert (d.images, d.gt_boxes, d.detections) == (6, 6, 6)
    # Found at IoU >= .5: a's gun (IoU .68), b's laptop, d's laptop, e's laptop; not b's spring, c's gun.
    assert d.recall50 == pytest.approx(4 / 6)
    assert d.aware is None  # the detector names no classes
    data = json.loads(report_json([r]))
    assert data["schema"] == "xray-edge/eval-1"
    assert data["reports"][0]["roc_m"]["thresholds"][0] is None  # +inf written as null
    md = markdown_report([r])
    assert "| Student-Teacher | stfpm@1 | 100.00 | 33.33 | 83.33 | 1.000 | 0.889 |" in md
    assert "corrupt_frame 1" in md


def test_scorer_family() -> None:
    assert scorer_family("scorer-stfpm@1.0") == "Student-Teacher"
    assert scorer_family("scorer-padim@1.0", "features from a student-teacher backbone") == "Feature distribution"
    assert scorer_family("my-model@1", "a DRAEM reconstruction model") == "Reconstruction"
    assert scorer_family("x", role="classifier") == "Supervised"
    assert scorer_family(None) == "Detector only"


def test_plots_are_optional(tmp_path: Path) -> None:
    from edge_tools.eval.plots import PlotsUnavailable, write_plots

    dataset, outcomes = _dataset(), _outcomes()
    r = build_report(dataset, outcomes, detector="det@1", scorer="stfpm@1", family="Student-Teacher")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(PlotsUnavailable, match="pip install"):
            write_plots([r], [(dataset, outcomes)], tmp_path)
        return
    files = write_plots([r], [(dataset, outcomes)], tmp_path)
    assert {f.name for f in files} == {"roc.png", "scores.png", "per_kind.png"}
    assert all(f.stat().st_size > 1000 for f in files)
