"""The edge-export commands end to end through typer's CliRunner: help texts, a full run, clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge.backends import open_backend
from edge.bundles import ClassifierOutputs, load_bundle
from export.cli import app
from export.tiny_models import tiny_classifier
from export.torch_to_onnx import run_torch

runner = CliRunner()

COMMANDS = ("onnx", "openvino", "quantize", "verify", "bundle", "import-anomalib")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example: edge-export " + command in " ".join(result.output.split())


def test_full_cli_run(tmp_path: Path) -> None:
    torch_args = ["--factory", "export.tiny_models:tiny_classifier", "--arg", "in_channels=1", "--arg", "num_classes=2"]
    m = tmp_path / "m.onnx"
    r = runner.invoke(app, ["onnx", *torch_args, "--role", "classifier", "--channels", "h", "--size", "24x32",
                            "--mean", "0.5", "--std", "0.25", "--classes", "benign,threat", "--exporter", "legacy",
                            "-o", str(m)])
    assert r.exit_code == 0, r.output
    assert "outputs probs['N', 2]" in r.output
    r = runner.invoke(app, ["openvino", str(m), "-o", str(tmp_path / "m.xml")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["openvino", str(m), "--precision", "fp16", "-o", str(tmp_path / "m16.xml")])
    assert r.exit_code == 0, r.output
    models = ["--model", str(m), "--model", str(tmp_path / "m.xml"), "--model", str(tmp_path / "m16.xml")]
    r = runner.invoke(app, ["verify", *models, *torch_args, "--samples", "8", "-o", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["passed"] and report["reference"].startswith("pytorch")
    assert [(e["backend"], e["precision"]) for e in report["entries"]] == [
        ("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "fp16")]
    fp16 = report["entries"][2]
    assert fp16["max_rel"] > report["entries"][1]["max_rel"]  # FP16 weights really were compressed
    out = tmp_path / "bundle"
    r = runner.invoke(app, ["bundle", *models, "--parity", str(tmp_path / "p.json"), "--name", "cls",
                            "--version", "2", "--training-data", "none (test)", "-o", str(out)])
    assert r.exit_code == 0, r.output
    bundle = load_bundle(out)
    assert bundle.manifest.classes == ("benign", "threat") and bundle.manifest.input.mean == (0.5,)
    assert bundle.manifest.training_data == "none (test)" and "torch" in bundle.manifest.toolchain
    x = np.random.default_rng(0).random((3, 1, 24, 32), dtype=np.float32)
    want = run_torch(tiny_classifier(in_channels=1, num_classes=2), x, ("probs",))["probs"]
    for backend, precision, tol in (("onnxruntime", "fp32", 1e-5), ("openvino", "fp16", 1e-2)):
        got = open_backend(bundle, backend, precision=precision).predict(x)
        assert isinstance(got, ClassifierOutputs)
        np.testing.assert_allclose(got.probs, want, atol=tol)
    # Bundling into an existing folder is refused; so is a bundle without a parity report.
    r = runner.invoke(app, ["bundle", *models, "--parity", str(tmp_path / "p.json"), "--name", "cls",
                            "--version", "2", "-o", str(out)])
    assert r.exit_code == 1 and "exists and is not empty" in r.output
    r = runner.invoke(app, ["bundle", *models, "--name", "cls", "--version", "2", "-o", str(tmp_path / "b2")])
    assert r.exit_code == 1 and "no parity report" in r.output


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    r = runner.invoke(app, ["onnx", "--factory", "export.tiny_models:nope", "--role", "scorer", "--size", "8x8",
                            "-o", str(tmp_path / "x.onnx")])
    assert r.exit_code == 1 and "cannot import" in r.output
    r = runner.invoke(app, ["onnx", "--factory", "export.tiny_models:tiny_scorer", "--role", "scorer",
                            "--size", "big", "-o", str(tmp_path / "x.onnx")])
    assert r.exit_code == 1 and "expected HEIGHTxWIDTH" in r.output
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"not onnx")
    r = runner.invoke(app, ["openvino", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "y.xml")])
    assert r.exit_code == 1 and "no such model file" in r.output
