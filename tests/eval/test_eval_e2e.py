"""End to end: `edge eval` on a tiny generated sim dataset with tiny real bundles, against the service itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from edge.config import load_config
from edge.runtime import build_runtime
from edge.sinks.memory import MemorySink
from edge_tools.eval.cli import eval_command
from edge_tools.eval.datasets import read_dataset
from edge_tools.eval.report import build_report
from edge_tools.eval.runner import RunSettings, run_dataset
from tests.eval.eval_helpers import EvalAssets


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(eval_command)
    return app


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_compare_two_scorers_in_parallel_workers(eval_assets: EvalAssets, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(_app(), [str(eval_assets.dataset), "--compare", str(eval_assets.scorer),
                                         str(eval_assets.scorer_b), "-c", str(eval_assets.config), "--out", str(out),
                                         "--workers", "2"])
    assert result.exit_code == 0, result.output
    truth = json.loads((eval_assets.dataset / "annotations.json").read_text())
    threat_by_key = {Path(im["low_file"]).parts[1]: bool(im["threat"]) for im in truth["images"]}
    reports = json.loads((out / "eval.json").read_text())["reports"]
    assert [r["scorer"] for r in reports] == ["scorer@0.1", "scorer-b@0.1"]
    for n, report in enumerate(reports, start=1):
        rows = _rows(out / f"items-{n}.jsonl")
        assert sorted(str(r["key"]) for r in rows) == sorted(threat_by_key)  # every item exactly once
        assert report["items"] == len(threat_by_key)
        assert report["threat_items"] == sum(threat_by_key.values())
        # Item counts recomputed from the per-item verdicts and the dataset's own truth.
        y = np.array([threat_by_key[str(r["key"])] for r in rows])
        alarm = np.array([r["verdict"] != "clear" for r in rows])
        m = report["at_configured"]
        assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (int((y & alarm).sum()), int((~y & alarm).sum()),
                                                        int((~y & ~alarm).sum()), int((y & ~alarm).sum()))
        scores = np.array([np.inf if r["verdict"] == "unscreened" else
                           (-np.inf if r["score_max"] is None else r["score_max"]) for r in rows], float)
        expected = roc_auc_score(y, np.nan_to_num(scores, posinf=1e9, neginf=-1e9))
        assert report["auroc_m"] == pytest.approx(expected, abs=1e-12)
        # The 95%-benign operating point keeps at least 95% of the benign items clear.
        b = report["at_benign95"]
        assert b["benign_tagged_benign"] >= 0.95
        assert b["tp"] == int(((scores >= b["threshold"]) & y).sum())
    md = (out / "eval.md").read_text()
    assert "| Method | Model | ↑ Recall (%) | ↓ FPR (%) | ↑ Accuracy (%)" in md
    assert "scorer-b@0.1" in md and "mAP@[.5:.95]" in md


def test_eval_gives_the_services_own_decisions(eval_assets: EvalAssets) -> None:
    dataset = read_dataset(eval_assets.dataset)
    outcomes = run_dataset(dataset.items, RunSettings(eval_assets.config), workers=1)
    # The live service on the same scanner and item stream (item n of the source is dataset item n - 1).
    memory = MemorySink()
    runtime = build_runtime(load_config(eval_assets.config), extra_sinks=[memory])
    runtime.pipeline.start()
    try:
        assert memory.wait_for(len(dataset.items), timeout_s=60)
    finally:
        runtime.pipeline.stop(5.0)
    service = {int(d.item_id.rsplit("-", 1)[1]) - 1: d for d in memory.decisions}
    assert len(outcomes) == len(dataset.items) == len(service)
    for index, outcome in enumerate(outcomes):
        decision = service[index]
        assert outcome.key == f"{index:06d}"
        assert outcome.verdict == str(decision.verdict)
        assert len(outcome.objects) == len(decision.objects)
        assert outcome.score_max() == pytest.approx(decision.item_score, abs=1e-5)


def test_corrupt_and_missing_files_are_unscreened_alarms(eval_assets: EvalAssets, tmp_path: Path) -> None:
    coco = json.loads((eval_assets.dataset / "annotations.json").read_text())
    images = coco["images"][:3]
    for im in images:  # absolute paths: the new annotation file lives elsewhere
        for key in ("low_file", "high_file", "file_name"):
            im[key] = str(eval_assets.dataset / im[key])
    broken = tmp_path / "low_truncated.png"
    data = Path(images[1]["low_file"]).read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    images[1]["low_file"] = str(broken)
    images[2]["high_file"] = str(tmp_path / "gone.png")
    coco["images"] = images
    ann = tmp_path / "subset.json"
    ann.write_text(json.dumps(coco))
    dataset = read_dataset(ann)
    outcomes = run_dataset(dataset.items, RunSettings(eval_assets.config), workers=1)
    assert [o.verdict for o in outcomes[1:]] == ["unscreened", "unscreened"]
    assert {o.reason for o in outcomes[1:]} == {"corrupt_frame"}
    assert "gone.png" in outcomes[2].detail
    report = build_report(dataset, outcomes, detector="d", scorer="s", family="f")
    assert report.unscreened == 2 and report.unscreened_reasons == {"corrupt_frame": 2}
    alarms = report.at_configured.tp + report.at_configured.fp
    assert alarms >= 2  # fail-safe: both unreadable items count as alarms


def test_degraded_images_and_detector_only(eval_assets: EvalAssets, tmp_path: Path) -> None:
    # The sim's pseudo-colour previews as a degraded COCO set: the tiny detector reads pc, the hlz scorer cannot.
    dataset = read_dataset(eval_assets.dataset, modality="image")
    assert all(i.modality == "image" for i in dataset.items)
    out = tmp_path / "out"
    result = CliRunner().invoke(_app(), [str(eval_assets.dataset), "--modality", "image", "--detector-only", "-c",
                                         str(eval_assets.config), "--workers", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval.json").read_text())["reports"][0]
    assert report["items"] == len(dataset.items) and report["unscreened"] == 0 and report["scorer"] is None
    assert report["auroc_m"] is None and report["at_benign95"] is None
    rows = {str(r["key"]): r for r in _rows(out / "items-1.jsonl")}
    assert report["detector_metrics"]["detections"] == sum(int(r["objects"]) for r in rows.values())  # type: ignore[call-overload]
    assert any(int(r["objects"]) for r in rows.values())  # type: ignore[call-overload]
    # With the scorer, every item with objects fails (its crops lack h/l/z) and is UNSCREENED, never dropped.
    with_scorer = run_dataset(dataset.items, RunSettings(eval_assets.config), workers=1)
    for outcome in with_scorer:
        if int(rows[outcome.key]["objects"]):  # type: ignore[call-overload]
            assert (outcome.verdict, outcome.reason) == ("unscreened", "model_error")
        else:
            assert outcome.verdict == "clear"


def test_cli_errors_are_clear(eval_assets: EvalAssets, tmp_path: Path) -> None:
    app = _app()
    runner = CliRunner()
    missing = runner.invoke(app, [str(tmp_path / "nothing"), "-c", str(eval_assets.config)])
    assert missing.exit_code == 1 and "no such file or folder" in missing.output
    stray = runner.invoke(app, [str(eval_assets.dataset), str(eval_assets.scorer), "-c", str(eval_assets.config)])
    assert stray.exit_code == 2 and "--compare" in stray.output
    bad_cfg = tmp_path / "bad.yaml"
    shutil.copy(eval_assets.config, bad_cfg)
    bad_cfg.write_text(bad_cfg.read_text().replace("threads: 1", "threads: 0"))
    bad = runner.invoke(app, [str(eval_assets.dataset), "-c", str(bad_cfg), "--workers", "1"])
    assert bad.exit_code == 1 and "bad.yaml:" in bad.output and "models.threads" in bad.output
    helptext = runner.invoke(app, ["--help"])
    assert helptext.exit_code == 0 and "Example" in helptext.output
