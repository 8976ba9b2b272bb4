"""Builders for the service tests: real (untrained) bundles exported through the toolchain and signed with a test
key, real calibrations made by the commissioning commands from the virtual scanner, and config files that tie
them together (trusting the test key, so the service's signature check runs as on a real box)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import onnx

from edge.bundles import ModelFormat, Precision, Role
from edge.bundles.signing import SIGNATURE_FILE, generate_key, sign_bundle
from edge.contracts import Channel, InputContract, ResizePolicy
from export import tiny_models
from export.bundle import BundleModel, make_bundle
from export.calibration import synthetic_inputs
from export.meta import ExportMeta, default_outputs, read_meta, write_onnx_meta
from export.onnx_to_openvino import convert_to_openvino
from export.parity import Candidate, run_batched, verify
from export.torch_to_onnx import Exporter, export_onnx, run_torch

REPO = Path(__file__).resolve().parents[2]
DETECTOR_CONTRACT = InputContract(channels=(Channel.PC,), height=128, width=128, resize=ResizePolicy.LETTERBOX)
SCORER_CONTRACT = InputContract(channels=(Channel.HLZ,), height=32, width=32)


@cache
def test_key() -> tuple[Path, Path]:
    """(private, public) Ed25519 key files made once per test process: the key every test bundle is signed with
    and every test config trusts. Never a key any box trusts: it lives in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="edge-test-key-"))
    return generate_key(folder / "test-signing.key")


def sign(bundle: Path) -> Path:
    """Sign ``bundle`` with the test key (again after a change); returns the bundle folder."""
    sign_bundle(bundle, test_key()[0])
    return bundle


def build_bundle(role: Role, workdir: Path, name: str, fixed_batch: bool = False, seed: int = 0) -> Path:
    """Export an untrained tiny model of ``role`` to ONNX + OpenVINO and bundle it (parity verified).

    ``fixed_batch`` pins the graph's batch axis to 1: such a scorer raises at run time as soon as an item has
    two objects, which is how the tests get a real model that fails mid-service. ``seed`` draws the weights
    (another seed, another model of the same shape).
    """
    contract = DETECTOR_CONTRACT if role is Role.DETECTOR else SCORER_CONTRACT
    torch_model = (tiny_models.tiny_detector(contract.tensor_channels, seed=seed) if role is Role.DETECTOR
                   else tiny_models.tiny_scorer(contract.tensor_channels, seed=seed))
    meta = ExportMeta(role=role, contract=contract, outputs=default_outputs(role), classes=())
    inputs = synthetic_inputs(contract, 8, seed=5).inputs
    ref = run_torch(torch_model, inputs, meta.output_names)
    if role is Role.DETECTOR:
        # Keep only the strongest candidates of an untrained model: a handful of objects per item.
        meta = replace(meta, thresholds={"score": float(np.quantile(ref["scores"], 0.98)), "nms_iou": 0.3})
    else:
        meta = replace(meta, thresholds={"score": float(np.median(ref["score"]))})
    onnx_path = workdir / f"{name}.onnx"
    meta = export_onnx(torch_model, meta, onnx_path, Exporter.LEGACY)
    if fixed_batch:
        graph = onnx.load(str(onnx_path))
        for value in [*graph.graph.input, *graph.graph.output]:
            value.type.tensor_type.shape.dim[0].ClearField("dim_param")
            value.type.tensor_type.shape.dim[0].dim_value = 1
        onnx.save(graph, str(onnx_path))
        write_onnx_meta(onnx_path, meta)
        meta = read_meta(onnx_path)
    xml = workdir / f"{name}_fp32.xml"
    convert_to_openvino(onnx_path, xml, Precision.FP32)
    batch = inputs[:1] if fixed_batch else inputs
    reference = run_batched(lambda b: run_torch(torch_model, b, meta.output_names), batch,
                            batch=1 if fixed_batch else 16)
    report = verify(meta, batch, reference, "pytorch", [Candidate("onnxruntime", Precision.FP32, onnx_path),
                                                        Candidate("openvino", Precision.FP32, xml)])
    bundle = make_bundle(workdir / name, name, "0.1", meta,
                         [BundleModel(ModelFormat.ONNX, Precision.FP32, onnx_path),
                          BundleModel(ModelFormat.OPENVINO, Precision.FP32, xml)],
                         report, training_data="untrained test model")
    return sign(bundle.root)


def calibrate(workdir: Path, seed: int = 0) -> tuple[Path, Path]:
    """Flat-field and energy calibration of the virtual scanner ``seed``, made by `edge calibrate`."""
    flat, energy = workdir / "flatfield.npz", workdir / "energy.yaml"
    for args in (["flatfield", "--from-sim", "--seed", str(seed), "-o", str(flat)],
                 ["energy", "--from-sim", "--seed", str(seed), "-o", str(energy)]):
        result = subprocess.run([sys.executable, "-m", "edge", "calibrate", *args], capture_output=True,
                                text=True, cwd=REPO, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
    return flat, energy


def write_config(path: Path, *, detector: Path, scorer: Path | None, flat: Path, energy: Path, state: Path,
                 items: int = 4, per_minute: float = 240.0, mqtt: str = "enabled: false", extra: str = "",
                 allow_unsigned: bool | None = None) -> Path:
    """A service config over the given bundles that trusts the test key.

    ``allow_unsigned`` None: set only when a bundle has no signature at all (the reference bundles in
    ``models/`` are not signed: ``edge demo`` signs copies with its own key; docs/install.md).
    """
    scorer_line = f"  scorer: {scorer}\n" if scorer is not None else ""
    if allow_unsigned is None:
        allow_unsigned = any(not (b / SIGNATURE_FILE).is_file() for b in (detector, scorer) if b is not None)
    trust = f"  trusted_keys: [{test_key()[1]}]\n" + ("  allow_unsigned: true\n" if allow_unsigned else "")
    path.write_text(
        f"""site:
  site_id: test-site
  scanner_id: lane1
source:
  type: sim
  seed: 0
  threat_rate: 0.5
  items_per_minute: {per_minute}
  max_items: {items}
condition:
  flatfield_file: {flat}
  energy_file: {energy}
models:
  detector: {detector}
{scorer_line}  backend: openvino
  threads: 1
  max_objects: 6
{trust}decide:
  deadline_s: 30
audit:
  directory: {state / "audit"}
mqtt:
  {mqtt}
  outbox:
    path: {state / "outbox.sqlite3"}
service:
  status_file: {state / "status.json"}
  stop_timeout_s: 5
{extra}""",
        encoding="utf-8",
    )
    return path
