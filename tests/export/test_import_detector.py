"""``edge-export import-detector`` end to end: real ONNX graphs in each foreign layout (built with onnx.helper, their
one box computed from the input), imported with the command, then screened by the service's own pipeline (config,
bundle loading and signature check, condition, detect, decide: ``edge_tools.eval.runner.EvalRuntime``) on real
ONNX Runtime and OpenVINO. The box must come back in the X-ray image's pixels, whatever letterbox, stretch,
channel order, scale and mean/std the exporter's pre-processing used; a bad layout or class is refused clearly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from edge.boxes import box_iou
from edge.bundles.loader import load_bundle
from edge.bundles.manifest import DetectorLayout, LayoutKind, ModelFormat, Precision
from edge.bundles.outputs import Role
from edge.contracts import Channel, InputContract
from edge_tools.eval.records import DatasetItem, ItemOutcome, ItemTruth, Modality
from edge_tools.eval.runner import EvalRuntime, RunSettings
from export.bundle import BundleModel, make_bundle
from export.cli import app
from export.import_detector import inspect_model, match_outputs
from export.meta import ExportMeta, write_onnx_meta
from tests.export.import_detector_graphs import CLASS, CLASSES, SCORE, build, ultralytics_metadata
from tests.service import service_helpers

H, W = 200, 400
TRUTH = (100.0, 50.0, 200.0, 150.0)
"""The object's box in image pixels (x1, y1, x2, y2); the images are W x H."""
MMDET_MEAN, MMDET_STD = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)  # BGR order, 0..255 units

runner = CliRunner()


def _image(path: Path, colour: tuple[int, int, int] = (0, 0, 0), grey: bool = False) -> Path:
    """A W x H air-white picture with one filled rectangle at TRUTH (``colour`` in RGB)."""
    img = np.full((H, W, 3), 255, np.uint8)
    x1, y1, x2, y2 = (int(v) for v in TRUTH)
    img[y1:y2, x1:x2] = colour
    out = img[:, :, 0] if grey else cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), out)
    return path


def _import(args: Sequence[str]) -> tuple[int, str]:
    result = runner.invoke(app, ["import-detector", *args])
    return result.exit_code, result.output


def _config(work: Path, bundle: Path, backend: str, precision: str = "fp32") -> Path:
    """A service config over ``bundle`` (signed with the test key, which the config trusts)."""
    path = work / "edge.yaml"
    path.write_text(f"""site:
  site_id: byod
  scanner_id: lane1
models:
  detector: {bundle}
  backend: {backend}
  precision: {precision}
  threads: 1
  max_objects: 8
  trusted_keys: [{service_helpers.test_key()[1]}]
decide:
  deadline_s: 30
audit:
  directory: {work / "audit"}
mqtt:
  enabled: false
  outbox:
    path: {work / "outbox.sqlite3"}
service:
  status_file: {work / "status.json"}
""", encoding="utf-8")
    return path


def _screen(work: Path, bundle: Path, images: Sequence[Path], backend: str, precision: str = "fp32",
            grey_as_colour: bool = True) -> list[ItemOutcome]:
    """The service's pipeline (one worker process: this one) over ``images``."""
    service_helpers.sign(bundle)
    settings = RunSettings(config=_config(work, bundle, backend, precision), detector_only=True,
                           grey_as_colour=grey_as_colour, deadline_s=60.0)
    runtime = EvalRuntime(settings)
    try:
        items = [DatasetItem(p.stem, Modality.IMAGE, (p,), ItemTruth(threat=True)) for p in images]
        return runtime.run(items)
    finally:
        runtime.close()


def _assert_found(outcome: ItemOutcome, min_iou: float = 0.99) -> None:
    """One object (the near-duplicate suppressed, the low-score box dropped) of class knife at TRUTH."""
    assert outcome.reason is None, (outcome.reason, outcome.detail)
    assert len(outcome.objects) == 1, outcome.objects
    obj = outcome.objects[0]
    assert obj.label == CLASSES[CLASS]
    assert obj.detector_score == pytest.approx(SCORE)
    iou = float(box_iou(np.array([obj.box]), np.array([TRUTH]))[0, 0])
    assert iou >= min_iou, (obj.box, TRUTH, iou)


@dataclass(frozen=True)
class Case:
    layout: str
    build: dict[str, object]
    flags: tuple[str, ...]
    backend: str
    colour: tuple[int, int, int] = (0, 0, 0)
    grey: bool = False


CASES = {
    # Ultralytics YOLOv8/11: names and imgsz from the metadata, centred letterbox, RGB / 255, pad 114.
    "yolov8-ultralytics": Case("yolov8", {"metadata": ultralytics_metadata(128, 128)}, (), "openvino"),
    # YOLOv5: objectness column; classes from the flag.
    "yolov5": Case("yolov5", {}, ("--classes", ",".join(CLASSES), "--size", "128x128"), "onnxruntime"),
    # NMS-free end-to-end export with boxes in [0, 1] of the input, 96x160 input (letterbox pads left/right too).
    "end2end-normalised": Case("end2end", {"normalised": True, "height": 96, "width": 160},
                               ("--classes", ",".join(CLASSES), "--boxes", "normalised"), "openvino"),
    # mmdeploy: BGR, 0..255 with mean/std, MMDetection's top-left padding; the object is red, so only a BGR
    # tensor makes channel 0 dark there.
    "dets-labels-mmdet": Case(
        "dets-labels", {"threshold": (0.3 * 255 - MMDET_MEAN[0]) / MMDET_STD[0]},
        ("--classes", ",".join(CLASSES), "--bgr", "--scale", "255", "--mean", ",".join(map(str, MMDET_MEAN)),
         "--std", ",".join(map(str, MMDET_STD)), "--resize", "letterbox-topleft"), "openvino", colour=(255, 0, 0)),
    # torchvision: [3, H, W] input (no batch axis), outputs without one, stretched; a grey model (h,h,h).
    "torchvision-grey": Case("torchvision", {"batch_axis": False, "height": 96, "width": 96},
                             ("--classes", ",".join(CLASSES), "--resize", "stretch", "--channels", "h,h,h"),
                             "onnxruntime", grey=True),
}


@pytest.mark.parametrize("case_id", list(CASES))
def test_each_layout_imports_and_the_service_finds_the_box_in_image_pixels(tmp_path: Path, case_id: str) -> None:
    case = CASES[case_id]
    model = build(case.layout, tmp_path / f"{case_id}.onnx", **case.build)  # type: ignore[arg-type]
    out = tmp_path / "bundle"
    code, text = _import([str(model), "--layout", case.layout, "--name", case_id, "-o", str(out),
                          "--threat-class", "knife=0.6", "--threat-class", "gun", *case.flags])
    assert code == 0, text
    assert "PARITY PASSED" in text
    bundle = load_bundle(out)
    m = bundle.manifest
    assert m.layout is not None and m.layout.kind is LayoutKind(case.layout)
    assert m.classes == CLASSES
    assert dict(m.threat_classes) == {"knife": 0.6, "gun": 0.25}  # gun: the score threshold
    assert {(e.format, e.precision) for e in m.models} == {(ModelFormat.ONNX, Precision.FP32),
                                                           (ModelFormat.OPENVINO, Precision.FP32)}
    assert m.parity is not None and m.parity.passed and len(m.parity.entries) == 2
    raw = yaml.safe_load((out / "bundle.yaml").read_text())
    assert raw["threat_classes"] == {"knife": 0.6, "gun": 0.25}
    assert raw["layout"]["kind"] == case.layout
    image = _image(tmp_path / "item.png", case.colour, case.grey)
    (outcome,) = _screen(tmp_path, out, [image], case.backend, grey_as_colour=not case.grey)
    _assert_found(outcome)


def test_ultralytics_metadata_gives_names_size_and_the_input_contract(tmp_path: Path) -> None:
    names = ("cutter", "gun", "knife", "spray")
    model = build("yolov8", tmp_path / "y.onnx", height=96, width=160, nc=4,
                  metadata=ultralytics_metadata(96, 160, names))
    code, text = _import([str(model), "--layout", "yolov8", "--name", "y", "-o", str(tmp_path / "b")])
    assert code == 0, text
    m = load_bundle(tmp_path / "b").manifest
    assert m.classes == names
    c = m.input
    assert (c.height, c.width, str(c.resize), [str(x) for x in c.channels]) == (96, 160, "letterbox", ["pc"])
    assert c.mean == () and c.std == () and c.pad_value == pytest.approx(114 / 255)
    assert m.thresholds == {"score": 0.25, "nms_iou": 0.7}
    assert m.threat_classes == {}
    assert "threat_classes" not in yaml.safe_load((tmp_path / "b" / "bundle.yaml").read_text())


def test_channel_order_matters_a_bgr_model_fed_rgb_finds_nothing(tmp_path: Path) -> None:
    """The same mmdeploy-style model imported without --bgr: channel 0 is then red, bright on the red object,
    so nothing is found; the --bgr import (above) finds it. Proves the order flag reaches the runtime composer."""
    case = CASES["dets-labels-mmdet"]
    model = build(case.layout, tmp_path / "m.onnx", **case.build)  # type: ignore[arg-type]
    flags = [f for f in case.flags if f != "--bgr"]
    code, text = _import([str(model), "--layout", case.layout, "--name", "rgb", "-o", str(tmp_path / "b"), *flags])
    assert code == 0, text
    (outcome,) = _screen(tmp_path, tmp_path / "b", [_image(tmp_path / "red.png", case.colour)], "openvino")
    assert outcome.reason is None and outcome.objects == ()


def test_wrong_layout_for_the_shape_names_the_output_and_its_shape(tmp_path: Path) -> None:
    model = build("yolov8", tmp_path / "y8.onnx")  # output0 [1, 7, 4]
    code, text = _import([str(model), "--layout", "yolov5", "--classes", ",".join(CLASSES), "--name", "x",
                          "-o", str(tmp_path / "b")])
    assert code == 1
    assert "output 'output0' has shape [1, 7, 4]" in text and "[1, N, 8]" in text and "--layout yolov8" in text
    assert "Traceback" not in text and not (tmp_path / "b").exists()
    code, text = _import([str(model), "--layout", "end2end", "--classes", ",".join(CLASSES), "--name", "x",
                          "-o", str(tmp_path / "b")])
    assert code == 1 and "output 'output0' has shape [1, 7, 4]" in text and "[1, N, 6]" in text
    # Two classes named for a 3-class head: 4+nc does not match.
    code, text = _import([str(model), "--layout", "yolov8", "--classes", "a,b", "--name", "x",
                          "-o", str(tmp_path / "b")])
    assert code == 1 and "[1, 6, N] for 2 classes" in text


def test_unknown_threat_class_and_missing_class_names_are_refused(tmp_path: Path) -> None:
    model = build("end2end", tmp_path / "e.onnx")
    code, text = _import([str(model), "--layout", "end2end", "--classes", ",".join(CLASSES), "--name", "x",
                          "-o", str(tmp_path / "b"), "--threat-class", "knive=0.5"])
    assert code == 1
    assert "'knive' is not a class of this model (did you mean 'knife'?)" in text and "gun, knife, wrench" in text
    code, text = _import([str(model), "--layout", "end2end", "--classes", ",".join(CLASSES), "--name", "x",
                          "-o", str(tmp_path / "b"), "--threat-class", "knife=1.5"])
    assert code == 1 and "[0, 1]" in text
    code, text = _import([str(model), "--layout", "end2end", "--name", "x", "-o", str(tmp_path / "b")])
    assert code == 1 and "names no classes; give --classes" in text
    assert not (tmp_path / "b").exists()


def test_int8_from_a_folder_of_images_through_add_int8(tmp_path: Path) -> None:
    model = build("yolov8", tmp_path / "y8.onnx", metadata=ultralytics_metadata(128, 128))
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(1)
    for i in range(8):  # the object moves, so decisions and boxes really vary across the set
        img = np.full((H, W, 3), 255, np.uint8)
        x, y = int(rng.integers(0, W - 120)), int(rng.integers(0, H - 90))
        img[y:y + 80, x:x + 110] = 0
        cv2.imwrite(str(calib / f"{i}.png"), img)
    out = tmp_path / "b"
    code, text = _import([str(model), "--layout", "yolov8", "--name", "y8", "-o", str(out), "--images", str(calib),
                          "--calibration", str(calib)])
    assert code == 0, text
    m = load_bundle(out).manifest
    assert (ModelFormat.OPENVINO, Precision.INT8) in {(e.format, e.precision) for e in m.models}
    assert m.layout is not None and m.layout.kind is LayoutKind.YOLOV8  # carried through add-int8
    int8 = [e for e in m.parity.entries if e.precision is Precision.INT8] if m.parity else []
    assert len(int8) == 1 and int8[0].passed and int8[0].decision_agreement is not None
    assert "[int8 added: decision agreement" in m.notes
    (outcome,) = _screen(tmp_path, out, [_image(tmp_path / "item.png")], "openvino", "int8")
    # INT8 quantises the graph's pixel-index arithmetic (indices up to 128 in 256 steps), which moves the found
    # bottom edge by about 4 model pixels: IoU 0.86 where every FP32 run gives 1.0.
    _assert_found(outcome, min_iou=0.8)


def test_a_bundle_whose_model_does_not_fit_its_layout_makes_items_unscreened_not_clear(tmp_path: Path) -> None:
    """A bundle written past the import's checks (layout yolov5 over a YOLOv8 head, forced): the service decides
    the item UNSCREENED model_error with the output's name and shape, never CLEAR with no objects."""
    model = build("yolov8", tmp_path / "y8.onnx")
    outputs = tuple(dc_replace(o, field="predictions") for o in match_outputs(inspect_model(model),
                                                                              LayoutKind.YOLOV5, {}))
    meta = ExportMeta(role=Role.DETECTOR, contract=InputContract((Channel.PC,), 128, 128, input_name="images"),
                      outputs=outputs, thresholds={"score": 0.25}, classes=CLASSES,
                      layout=DetectorLayout(LayoutKind.YOLOV5))
    write_onnx_meta(model, meta)
    make_bundle(tmp_path / "b", "wrong", "1", meta, [BundleModel(ModelFormat.ONNX, Precision.FP32, model)], None,
                force=True)
    (outcome,) = _screen(tmp_path, tmp_path / "b", [_image(tmp_path / "item.png")], "onnxruntime")
    assert outcome.verdict == "unscreened" and outcome.reason == "model_error"
    assert "output 'output0' has shape [1, 7, 4]; the yolov5 layout expects [1, N, 5+nc]" in outcome.detail


def test_an_ultralytics_openvino_export_imports_from_its_xml_and_metadata_yaml(tmp_path: Path) -> None:
    """``yolo export format=openvino`` writes best_openvino_model/{best.xml, best.bin, metadata.yaml}: the IR is
    imported as it is (no ONNX model in the bundle; the reference is the IR on OpenVINO), names and size from the
    YAML."""
    import openvino as ov

    folder = tmp_path / "best_openvino_model"
    folder.mkdir()
    onnx_path = build("yolov8", tmp_path / "best.onnx", height=96, width=160)
    ov.save_model(ov.convert_model(str(onnx_path)), str(folder / "best.xml"), compress_to_fp16=False)
    (folder / "metadata.yaml").write_text(yaml.safe_dump(
        {"author": "Ultralytics", "task": "detect", "stride": 32, "batch": 1, "imgsz": [96, 160],
         "names": dict(enumerate(CLASSES))}), encoding="utf-8")
    code, text = _import([str(folder / "best.xml"), "--layout", "yolov8", "--name", "ov", "-o", str(tmp_path / "b")])
    assert code == 0, text
    m = load_bundle(tmp_path / "b").manifest
    assert m.classes == CLASSES and (m.input.height, m.input.width) == (96, 160)
    assert [(e.format, e.precision) for e in m.models] == [(ModelFormat.OPENVINO, Precision.FP32)]
    assert m.parity is not None and m.parity.reference.startswith("openvino/fp32 (best.xml")
    (outcome,) = _screen(tmp_path, tmp_path / "b", [_image(tmp_path / "item.png")], "openvino")
    _assert_found(outcome)


def test_an_onnx_file_with_external_weights_is_imported(tmp_path: Path) -> None:
    import onnx

    src = build("end2end", tmp_path / "e.onnx")
    ext = tmp_path / "ext"
    ext.mkdir()
    onnx.save(onnx.load(str(src)), str(ext / "e.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="e.weights", size_threshold=256)  # the float tables; shape inputs stay inline for ORT
    assert (ext / "e.weights").stat().st_size > 0
    code, text = _import([str(ext / "e.onnx"), "--layout", "end2end", "--classes", ",".join(CLASSES), "--name", "e",
                          "-o", str(tmp_path / "b")])
    assert code == 0, text
    assert "PARITY PASSED" in text
