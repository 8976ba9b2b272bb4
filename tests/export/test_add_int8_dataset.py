"""``edge-export add-int8`` end to end with a labelled dataset folder as ``--data`` (issue 31).

A site that fine-tuned a detector on its own labelled scans calibrates INT8 on those same scans, without first
composing them into tensors. :mod:`tests.export.test_calibration_data` checks the inputs
(:func:`export.calibration.load_inputs`); this checks that the command takes the folder and writes a bundle the
runtime loads at INT8. Before the dataset readers were wired in, the command refused such a folder ("no .npy or
.npz items"). Real parts: a tiny detector exported to ONNX and OpenVINO, NNCF, OpenVINO Runtime, real image files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from edge.bundles import Bundle, ModelFormat, Precision, Role, load_bundle
from edge.contracts import Channel, InputContract, ResizePolicy
from export.bundle import BundleModel, make_bundle
from export.calibration import load_inputs, synthetic_inputs
from export.cli import app
from export.meta import ExportMeta, default_outputs
from export.onnx_to_openvino import convert_to_openvino
from export.parity import Candidate, run_batched, run_candidate, verify
from export.tiny_models import tiny_detector
from export.torch_to_onnx import Exporter, export_onnx, run_torch
from tests.recipes.test_own_data import CLASSES, OBJECTS, make_coco, make_voc

# Pseudo-colour pictures give pseudo-colour inputs: the contract a detector trained on them has.
CONTRACT = InputContract(channels=(Channel.PC,), height=64, width=64, resize=ResizePolicy.LETTERBOX,
                         mean=(0.5,) * 3, std=(0.25,) * 3)


def _fp32_detector(work: Path) -> Bundle:
    """A class-aware tiny detector bundle with ONNX and OpenVINO FP32 models only, its score threshold at the
    median score (so decisions really split and agreement means something)."""
    work.mkdir()
    model = tiny_detector(3, num_classes=len(CLASSES))
    meta = ExportMeta(role=Role.DETECTOR, contract=CONTRACT,
                      outputs=default_outputs(Role.DETECTOR, with_optional=("labels",)), classes=CLASSES)
    x = synthetic_inputs(CONTRACT, 8, seed=3).inputs
    ref = run_torch(model, x, meta.output_names)
    meta = ExportMeta(role=meta.role, contract=CONTRACT, outputs=meta.outputs, classes=CLASSES,
                      thresholds={"score": float(np.median(ref["scores"]))})
    onnx = export_onnx(model, meta, work / "det.onnx", Exporter.LEGACY)
    xml = work / "det_fp32.xml"
    convert_to_openvino(work / "det.onnx", xml, Precision.FP32)
    reference = run_batched(lambda b: run_torch(model, b, onnx.output_names), x)
    report = verify(onnx, x, reference, "pytorch", [Candidate("onnxruntime", Precision.FP32, work / "det.onnx"),
                                                    Candidate("openvino", Precision.FP32, xml)])
    return make_bundle(work / "bundle", "tiny-pc-detector", "0.1", onnx,
                       [BundleModel(ModelFormat.ONNX, Precision.FP32, work / "det.onnx"),
                        BundleModel(ModelFormat.OPENVINO, Precision.FP32, xml)], report,
                       training_data="untrained test model")


def test_add_int8_calibrates_on_a_voc_folder_and_validates_on_a_coco_folder(tmp_path: Path) -> None:
    src = _fp32_detector(tmp_path / "fp32")
    assert not any(m.precision is Precision.INT8 for m in src.manifest.models)
    voc, coco = make_voc(tmp_path / "voc"), make_coco(tmp_path / "coco")
    out = tmp_path / "int8"
    result = CliRunner().invoke(app, ["add-int8", str(src.root), "--data", str(voc), "--validation", str(coco),
                                      "-o", str(out), "--version", "0.2", "--max-drop", "0.5", "--threads", "1"])
    assert result.exit_code == 0, result.output
    m = load_bundle(out).manifest
    assert m.version == "0.2" and m.classes == CLASSES and m.thresholds == src.manifest.thresholds
    int8 = next(e for e in m.models if e.format is ModelFormat.OPENVINO and e.precision is Precision.INT8)
    # judged on the COCO folder's four pictures (without --validation it would be every 4th VOC input: one)
    assert f"on {len(OBJECTS)} validation inputs" in m.notes
    assert m.parity is not None and m.parity.passed
    assert any(e.precision is Precision.INT8 and e.passed for e in m.parity.entries)
    # the INT8 model runs on the very inputs the service composes from those pictures
    x = load_inputs(coco, CONTRACT).inputs
    got = run_candidate(Candidate("openvino", Precision.INT8, out / int8.path), x, 1)
    assert got["scores"].shape[0] == len(OBJECTS) and np.all(np.isfinite(got["scores"]))

