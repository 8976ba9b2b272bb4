"""Turn an anomalib export (ONNX and/or OpenVINO IR, FP32/FP16) into an xray-edge scorer bundle.

anomalib 2.x bakes resize, ImageNet normalisation, min-max normalisation and thresholds into the graph
(see ``../shared/realdata/anomalib/README.md``); outside the graph it only feeds RGB / 255 as NCHW float32 at
the image's own size. The bundle's input contract therefore says: channels ``pc`` (RGB in [0, 1]), the chosen
size, no mean/std; outputs ``pred_score`` → ``score`` and ``anomaly_map`` → ``anomaly_map``; threshold 0.5 on
the graph's already-normalised score; normalisation ``none``. An anomalib 1.x ``metadata.json`` with
``image_threshold``/``min``/``max`` (normalisation outside the graph) becomes ``centred`` normalisation.
Parity is checked against the OpenVINO FP32 IR, anomalib's own reference inferencer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.bundles.loader import Bundle
from edge.bundles.manifest import ModelFormat, NormalisationKind, OutputSpec, Precision, ScoreNormalisation
from edge.bundles.outputs import DECISION_THRESHOLD_KEY, Role
from edge.contracts import Channel, InputContract
from export.bundle import BundleModel, make_bundle
from export.calibration import synthetic_inputs
from export.errors import ExportError
from export.meta import ExportMeta
from export.parity import Candidate, run_candidate, verify

log = logging.getLogger(__name__)

FIELD_OF = {"pred_score": "score", "anomaly_map": "anomaly_map"}


def find_exports(model_dir: Path) -> list[BundleModel]:
    """anomalib's ``create_export_root`` layout: weights/onnx/model.onnx, weights/openvino/model.xml,
    fp16/weights/openvino/model.xml (the last is our fixtures' convention for the FP16 export)."""
    found = []
    for rel, fmt, prec in (("weights/onnx/model.onnx", ModelFormat.ONNX, Precision.FP32),
                           ("weights/openvino/model.xml", ModelFormat.OPENVINO, Precision.FP32),
                           ("fp16/weights/openvino/model.xml", ModelFormat.OPENVINO, Precision.FP16)):
        if (model_dir / rel).is_file():
            found.append(BundleModel(fmt, prec, model_dir / rel))
    if not found:
        raise ExportError(f"{model_dir}: no anomalib export found (expected weights/onnx/model.onnx or "
                          "weights/openvino/model.xml)")
    return found


def graph_outputs(path: Path) -> tuple[str, tuple[OutputSpec, ...]]:
    """(input name, output specs) read from the graph itself."""
    import openvino as ov

    model = ov.Core().read_model(str(path))
    if len(model.inputs) != 1:
        raise ExportError(f"{path}: expected one input, found {len(model.inputs)}")
    specs = []
    for out in model.outputs:
        name = out.get_any_name()
        shape = tuple("N" if i == 0 else (int(d.get_length()) if d.is_static else "?")
                      for i, d in enumerate(out.get_partial_shape()))
        specs.append(OutputSpec(name=name, field=FIELD_OF.get(name), shape=shape,
                                dtype=str(out.get_element_type().to_dtype())))
    missing = set(FIELD_OF) - {s.name for s in specs}
    if missing:
        raise ExportError(f"{path}: not an anomalib anomaly model export: outputs {sorted(missing)} missing")
    return model.inputs[0].get_any_name(), tuple(specs)


def read_metadata_json(model_dir: Path) -> tuple[ScoreNormalisation, float] | None:
    """Normalisation from an anomalib 1.x ``metadata.json`` next to the export, if there is one."""
    for path in sorted(model_dir.rglob("metadata.json")):
        data = json.loads(path.read_text())
        thr = data.get("image_threshold")
        low = data.get("pred_scores.min", data.get("min"))
        high = data.get("pred_scores.max", data.get("max"))
        if thr is not None and low is not None and high is not None:
            return ScoreNormalisation(NormalisationKind.CENTRED, low=float(low), high=float(high),
                                      centre=float(thr)), 0.5
        log.warning("%s: no image_threshold/min/max; assuming normalisation is in the graph", path)
    return None


def anomalib_input(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """anomalib's outside-the-graph pre-processing: (H, W, 3) RGB uint8 → (1, 3, H, W) float32 in [0, 1]."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ExportError(f"expected an (H, W, 3) RGB image, got {rgb.shape}")
    return np.ascontiguousarray((rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None])


def load_images(folder: Path, height: int, width: int) -> npt.NDArray[np.float32]:
    """``*.input.npy`` tensors as they are, and other ``*.png`` (not masks) through :func:`anomalib_input`."""
    import cv2

    arrays = [np.load(p) for p in sorted(folder.glob("*.input.npy"))]
    if not arrays:
        for p in sorted(folder.glob("*.png")):
            if p.stem.endswith("_mask"):
                continue
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ExportError(f"{p}: unreadable image")
            arrays.append(anomalib_input(np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)))
    if not arrays:
        raise ExportError(f"{folder}: no *.input.npy or *.png images")
    x = np.concatenate([a.reshape(-1, *a.shape[-3:]) for a in arrays]).astype(np.float32)
    if x.shape[1:] != (3, height, width):
        raise ExportError(f"{folder}: images are {x.shape[1:]}, the contract says (3, {height}, {width})")
    return x


def import_anomalib(model_dir: Path, out: Path, name: str, version: str, height: int, width: int,
                    images: Path | None = None, force: bool = False, overwrite: bool = False,
                    training_data: str = "", progress: Callable[[str], None] | None = None) -> Bundle:
    """Build the bundle, with a parity report over ``images`` (or synthetic inputs) against OpenVINO FP32."""
    say = progress or (lambda _m: None)
    models = find_exports(model_dir)
    input_name, outputs = graph_outputs(models[0].path)
    norm, thr = read_metadata_json(model_dir) or (ScoreNormalisation(), 0.5)
    contract = InputContract(channels=(Channel.PC,), height=height, width=width, input_name=input_name)
    meta = ExportMeta(role=Role.SCORER, contract=contract, outputs=outputs,
                      thresholds={DECISION_THRESHOLD_KEY: thr}, normalisation=norm)
    inputs = (load_images(images, height, width) if images is not None
              else synthetic_inputs(contract, 8).inputs)
    ref_model = next((m for m in models if m.format is ModelFormat.OPENVINO and m.precision is Precision.FP32),
                     models[0])
    ref_backend = "openvino" if ref_model.format is ModelFormat.OPENVINO else "onnxruntime"
    say(f"reference: {ref_backend}/{ref_model.precision} on {len(inputs)} inputs")
    reference = run_candidate(Candidate(ref_backend, ref_model.precision, ref_model.path), inputs)
    candidates = [Candidate("openvino" if m.format is ModelFormat.OPENVINO else "onnxruntime", m.precision, m.path)
                  for m in models]
    report = verify(meta, inputs, reference, f"anomalib {ref_backend}/{ref_model.precision} ({ref_model.path.name})",
                    candidates, progress=say)
    notes = ("Imported from an anomalib export. Outside the graph anomalib feeds RGB/255 NCHW at the image's own "
             "size; resize (bilinear, antialias off), ImageNet normalisation, min-max normalisation and "
             "thresholds are inside the graph; pred_score 0.5 is anomalib's threshold (it uses '>').")
    return make_bundle(out, name, version, meta, models, report, force=force, training_data=training_data,
                       notes=notes, toolchain_extra={"source": f"anomalib export ({model_dir.name})"},
                       overwrite=overwrite)
