"""``edge-export set-thresholds``: a post-export choice (box voting on a detector) becomes a new bundle version with
the model files and parity report untouched; keys the runtime does not read for the role, or values outside
[0, 1], are refused with the key named."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from edge.bundles import load_bundle
from edge.bundles.outputs import item_threshold_detector
from export.cli import app

CLASSAWARE = Path(__file__).resolve().parents[2] / "models" / "detector-classes"
SCORER = CLASSAWARE.parent / "classifier-threat"


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["set-thresholds", *args])
    return result.exit_code, result.output


def test_sets_and_removes_a_detector_key_as_a_new_version(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(CLASSAWARE, src)
    before = load_bundle(src).manifest
    code, out = _run(str(src), "--set", "vote_iou=0.7", "--set", "nms_iou=0.45", "-o", str(tmp_path / "a"),
                     "--version", "9.1", "--note", "measured")
    assert code == 0, out
    a = load_bundle(tmp_path / "a").manifest
    assert a.thresholds == {**before.thresholds, "vote_iou": 0.7, "nms_iou": 0.45}
    assert a.version == "9.1" and a.notes.startswith("[9.1: ")
    assert f"vote_iou {before.thresholds.get('vote_iou')} -> 0.7" in a.notes
    assert a.notes.endswith(before.notes) and "measured" in a.notes
    assert [(f.path, f.sha256) for f in a.files] == [(f.path, f.sha256) for f in before.files]
    assert a.parity == before.parity

    code, out = _run(str(tmp_path / "a"), "--set", "vote_iou=none", "-o", str(tmp_path / "a"), "--version", "9.2")
    assert code == 0, out
    assert "vote_iou" not in load_bundle(tmp_path / "a").manifest.thresholds


def test_refuses_keys_of_other_roles_bad_values_and_a_taken_folder(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("x")
    for args, message in ((["--set", "item=0.9"], "edge eval --write-item-threshold"),
                          (["--set", "mean=0.9"], "no threshold 'mean'"),
                          (["--set", "vote_iou=1.5"], "[0, 1]"),
                          (["--set", "vote_iou"], "KEY=VALUE"),
                          (["--set", "vote_iou=high"], "not a number"),
                          (["--set", "score=none"], "cannot be removed"),
                          (["--set", "vote_iou=0.45"], "vote into each other"),
                          (["--set", "nms_iou=0.7"], "vote into each other")):
        code, out = _run(str(CLASSAWARE), *args, "-o", str(tmp_path / "x"), "--version", "0")
        assert code == 1 and message in out, out
        assert not (tmp_path / "x").exists()
    code, out = _run(str(CLASSAWARE), "--set", "vote_iou=0.6", "-o", str(taken), "--version", "0")
    assert code == 1 and (taken / "keep.txt").is_file()

    code, out = _run(str(CLASSAWARE), "--set", "score=0.3", "-o", str(tmp_path / "y"), "--version",
                     load_bundle(CLASSAWARE).manifest.version)
    assert code == 1 and "a change needs a new one" in out


def test_a_scorer_keeps_its_item_threshold_note_first(tmp_path: Path) -> None:
    """The service reads which detector an item threshold was measured through from the note's first bracket;
    a threshold change must not push it down (or the stale-detector warning goes quiet)."""
    src = load_bundle(SCORER)
    measured = item_threshold_detector(src.manifest.notes)
    assert measured is not None
    code, out = _run(str(SCORER), "--set", "score=0.55", "-o", str(tmp_path / "s"), "--version", "9")
    assert code == 0, out
    notes = load_bundle(tmp_path / "s").manifest.notes
    assert item_threshold_detector(notes) == measured
    assert f"[9: score {src.manifest.thresholds['score']} -> 0.55] " in notes
