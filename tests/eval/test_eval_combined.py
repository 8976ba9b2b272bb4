"""`edge eval` judges an item as the service does (issue 32): every signal (threat classes, classifier, scorer), the
reason codes per item, a combined score for AUROC, and the old `models.scorer` slot figures kept beside them."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from edge.bundles import ModelFormat, Precision, Role
from edge.config import load_config
from edge.records import AlarmReason, ReasonKind
from edge.runtime import build_runtime
from edge.sinks.memory import MemorySink
from edge_tools.eval.cli import eval_command
from edge_tools.eval.datasets import read_dataset
from edge_tools.eval.records import signal_ratio
from edge_tools.eval.report import build_report
from edge_tools.eval.runner import RunSettings, run_dataset
from export import tiny_models
from export.bundle import BundleModel, make_bundle
from export.calibration import synthetic_inputs
from export.meta import ExportMeta, default_outputs
from export.onnx_to_openvino import convert_to_openvino
from export.parity import Candidate, run_batched, verify
from export.torch_to_onnx import Exporter, export_onnx, run_torch
from tests.eval.eval_helpers import EvalAssets
from tests.service.service_helpers import SCORER_CONTRACT, sign


def build_classifier(workdir: Path, quantile: float) -> Path:
    """An untrained tiny benign/anomaly classifier bundle whose threshold is the ``quantile`` of its anomaly
    probability on synthetic crops (so that some objects reach it and some do not)."""
    model = tiny_models.tiny_classifier(SCORER_CONTRACT.tensor_channels, num_classes=2, seed=7)
    meta = ExportMeta(role=Role.CLASSIFIER, contract=SCORER_CONTRACT, outputs=default_outputs(Role.CLASSIFIER),
                      classes=("benign", "anomaly"))
    inputs = synthetic_inputs(SCORER_CONTRACT, 8, seed=5).inputs
    ref = run_torch(model, inputs, meta.output_names)
    meta = replace(meta, thresholds={"score": float(np.quantile(ref["probs"][:, 1], quantile))})
    onnx_path = workdir / "cls.onnx"
    meta = export_onnx(model, meta, onnx_path, Exporter.LEGACY)
    xml = workdir / "cls_fp32.xml"
    convert_to_openvino(onnx_path, xml, Precision.FP32)
    reference = run_batched(lambda b: run_torch(model, b, meta.output_names), inputs, batch=16)
    report = verify(meta, inputs, reference, "pytorch", [Candidate("onnxruntime", Precision.FP32, onnx_path),
                                                         Candidate("openvino", Precision.FP32, xml)])
    bundle = make_bundle(workdir / "cls", "cls", "0.1", meta,
                         [BundleModel(ModelFormat.ONNX, Precision.FP32, onnx_path),
                          BundleModel(ModelFormat.OPENVINO, Precision.FP32, xml)],
                         report, training_data="untrained test model")
    return sign(bundle.root)


@pytest.fixture(scope="module")
def with_classifier(eval_assets: EvalAssets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("eval-combined")
    classifier = build_classifier(work, 0.3)
    text = eval_assets.config.read_text()
    scorer_line = f"  scorer: {eval_assets.scorer}\n"
    assert scorer_line in text
    config = work / "edge.yaml"
    config.write_text(text.replace(scorer_line, f"{scorer_line}  classifier: {classifier}\n"))
    return config


def test_signal_ratio_puts_every_threshold_at_one() -> None:
    assert signal_ratio(AlarmReason(ReasonKind.CLASSIFIER, None, 0.9, 0.6)) == pytest.approx(1.5)
    assert signal_ratio(AlarmReason(ReasonKind.ANOMALY, None, 0.3, 0.6)) == pytest.approx(0.5)
    assert signal_ratio(AlarmReason(ReasonKind.KNOWN, "cutter", 0.1, 0.0)) == math.inf
    assert signal_ratio(AlarmReason(ReasonKind.KNOWN, "cutter", -0.1, 0.0)) == -math.inf


def test_eval_judges_like_the_service_and_the_classifier_moves_the_figures(eval_assets: EvalAssets,
                                                                           with_classifier: Path) -> None:
    dataset = read_dataset(eval_assets.dataset)
    both = run_dataset(dataset.items, RunSettings(with_classifier), workers=1)
    scorer_only = run_dataset(dataset.items, RunSettings(eval_assets.config), workers=1)

    # The live service with the same config on the same scanner and item stream.
    memory = MemorySink()
    runtime = build_runtime(load_config(with_classifier), extra_sinks=[memory])
    runtime.pipeline.start()
    try:
        assert memory.wait_for(len(dataset.items), timeout_s=60)
    finally:
        runtime.pipeline.stop(5.0)
    service = {int(d.item_id.rsplit("-", 1)[1]) - 1: d for d in memory.decisions}
    for index, outcome in enumerate(both):
        decision = service[index]
        assert outcome.verdict == str(decision.verdict)
        assert outcome.reason_codes == decision.reason_codes
        # the combined score reaches 1 exactly on the items the service alarmed on (None: no object)
        combined = outcome.signal_max()
        assert (combined is not None and combined >= 1.0) == (outcome.verdict == "alarm")
        assert (combined is None) == (not outcome.objects)
    assert any("classifier" in o.reason_codes for o in both), [o.reason_codes for o in both]
    assert not any("classifier" in o.reason_codes for o in scorer_only)

    r_both = build_report(dataset, both, detector="d", scorer="s", family="f", classifier="cls@0.1")
    r_one = build_report(dataset, scorer_only, detector="d", scorer="s", family="f")
    assert r_both.combined is not None and r_one.combined is not None
    assert [f.signal for f in r_both.signals] == ["classifier", "anomaly"]
    assert [f.signal for f in r_one.signals] == ["anomaly"]
    assert r_both.reason_counts.get("classifier", 0) > 0 and "classifier" not in r_one.reason_counts
    # the combined score and the verdict counts move with the classifier; the scorer slot's own figures do not
    assert [o.signal_max() for o in both] != [o.signal_max() for o in scorer_only]
    alarms_both = r_both.combined.at_threshold.tp + r_both.combined.at_threshold.fp
    alarms_one = r_one.combined.at_threshold.tp + r_one.combined.at_threshold.fp
    assert alarms_both >= alarms_one
    assert r_both.auroc_m == r_one.auroc_m
    assert r_both.signals[1].auroc_m == r_one.signals[0].auroc_m
    assert r_both.combined.at_threshold == r_both.at_configured  # combined = the service's verdicts


def test_eval_cli_writes_reasons_and_combined_scores(eval_assets: EvalAssets, with_classifier: Path,
                                                     tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(eval_command)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [str(eval_assets.dataset), "-c", str(with_classifier), "--workers", "1",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "items-1.jsonl").read_text().splitlines()]
    for row in rows:
        assert isinstance(row["reasons"], list)
        assert (row["verdict"] == "alarm") == bool(row["reasons"])
        assert (row["combined_score"] is not None and row["combined_score"] >= 1.0) == (row["verdict"] == "alarm")
    report = json.loads((out / "eval.json").read_text())["reports"][0]
    assert report["classifier"] == "cls@0.1"
    assert report["combined"]["signal"] == "combined"
    md = (out / "eval.md").read_text()
    assert "**Table C.**" in md and "classifier `cls@0.1`" in md
