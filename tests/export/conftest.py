"""Shared fixtures: tiny models of every role exported once per session (dynamo exporter, real ORT/OpenVINO)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.bundles import Bundle, ModelFormat, Precision, Role
from edge.contracts import Channel, InputContract
from export import tiny_models
from export.bundle import BundleModel, make_bundle
from export.calibration import synthetic_inputs
from export.meta import ExportMeta, default_outputs
from export.onnx_to_openvino import convert_to_openvino
from export.parity import Candidate, run_batched, verify
from export.torch_to_onnx import Exporter, export_onnx, run_torch

CONTRACTS = {
    Role.DETECTOR: InputContract(channels=(Channel.HLZ,), height=64, width=96),
    Role.SCORER: InputContract(channels=(Channel.H, Channel.Z), height=32, width=32, mean=(0.5, 0.2), std=(0.25, 0.1)),
    Role.CLASSIFIER: InputContract(channels=(Channel.PC,), height=32, width=32),
    Role.SEGMENTER: InputContract(channels=(Channel.HLZ,), height=32, width=48),
}
FACTORIES = {
    Role.DETECTOR: lambda c: tiny_models.tiny_detector(c, num_classes=3),
    Role.SCORER: lambda c: tiny_models.tiny_scorer(c),
    Role.CLASSIFIER: lambda c: tiny_models.tiny_classifier(c, num_classes=3),
    Role.SEGMENTER: lambda c: tiny_models.tiny_segmenter(c, num_classes=2),
}
CLASSES = {Role.DETECTOR: ("knife", "gun", "other"), Role.SCORER: (), Role.CLASSIFIER: ("benign", "a", "b"),
           Role.SEGMENTER: ("background", "anomaly")}


@dataclass
class Built:
    role: Role
    model: torch.nn.Module
    meta: ExportMeta
    onnx: Path
    xml: Path
    bundle: Bundle


def build(role: Role, workdir: Path) -> Built:
    contract = CONTRACTS[role]
    model = FACTORIES[role](contract.tensor_channels)
    optional = ("labels",) if role is Role.DETECTOR else ()
    meta = ExportMeta(role=role, contract=contract, outputs=default_outputs(role, with_optional=optional),
                      classes=CLASSES[role])
    inputs = synthetic_inputs(contract, 12, seed=3).inputs
    if role in (Role.DETECTOR, Role.SCORER):
        # Threshold at the median PyTorch score, so that decisions really split and agreement means something.
        ref = run_torch(model, inputs, meta.output_names)
        median = float(np.median(ref["scores" if role is Role.DETECTOR else "score"]))
        meta = replace(meta, thresholds={"score": median})
    onnx_path = workdir / f"{role}.onnx"
    # The dynamo exporter (the default) costs 2–6 s per model here, the legacy one < 1 s: the scorer goes
    # through dynamo (and the CLI test exports with dynamo too), the others through legacy to keep tests fast.
    meta = export_onnx(model, meta, onnx_path, Exporter.DYNAMO if role is Role.SCORER else Exporter.LEGACY)
    xml = workdir / f"{role}_fp32.xml"
    convert_to_openvino(onnx_path, xml, Precision.FP32)
    reference = run_batched(lambda b: run_torch(model, b, meta.output_names), inputs)
    report = verify(meta, inputs, reference, "pytorch", [Candidate("onnxruntime", Precision.FP32, onnx_path),
                                                         Candidate("openvino", Precision.FP32, xml)])
    bundle = make_bundle(workdir / f"{role}_bundle", f"tiny-{role}", "0.1", meta,
                         [BundleModel(ModelFormat.ONNX, Precision.FP32, onnx_path),
                          BundleModel(ModelFormat.OPENVINO, Precision.FP32, xml)],
                         report, training_data="untrained test model")
    return Built(role, model, meta, onnx_path, xml, bundle)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[Role, Built]:
    workdir = tmp_path_factory.mktemp("export")
    return {role: build(role, workdir) for role in Role}
