"""The foreign detector layouts' decoders (``edge.bundles.layouts``), the manifest rules around ``layout`` and
``threat_classes``, and the composer's ``bgr`` channel group and ``letterbox-topleft`` resize they rely on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge.bundles.layouts import LayoutError, decode, decode_outputs
from edge.bundles.loader import load_bundle
from edge.bundles.manifest import (
    BoxUnits,
    DetectorLayout,
    LayoutKind,
    OutputSpec,
    check_consistency,
    manifest_from_dict,
    manifest_to_dict,
    seal,
)
from edge.condition.composer import compose, geometry
from edge.condition.degraded import from_pseudo_colour
from edge.contracts import Channel, InputContract, ResizePolicy
from edge.errors import BackendError, BundleError

NC = 3
REPO = Path(__file__).resolve().parents[2]


def _v8(layout: LayoutKind = LayoutKind.YOLOV8) -> DetectorLayout:
    return DetectorLayout(layout)


def test_yolov8_centre_size_boxes_and_the_best_class() -> None:
    pred = np.zeros((1, 4 + NC, 3), np.float32)
    pred[0, :4, 0] = (50, 40, 20, 10)  # cx, cy, w, h
    pred[0, 4:, 0] = (0.1, 0.7, 0.3)
    pred[0, :4, 1] = (10, 10, 4, 4)
    pred[0, 4:, 1] = (0.2, 0.0, 0.05)
    out = decode(_v8(), {"predictions": ("output0", pred)}, NC, 100, 100)
    np.testing.assert_allclose(out.boxes[0, 0], (40, 35, 60, 45))
    np.testing.assert_allclose(out.scores[0, :2], (0.7, 0.2))
    assert out.labels is not None and list(out.labels[0, :2]) == [1, 0]


def test_yolov5_score_is_objectness_times_class_probability() -> None:
    pred = np.zeros((2, 2, 5 + NC), np.float32)
    pred[1, 0] = (30, 30, 10, 20, 0.5, 0.1, 0.2, 0.8)
    out = decode(_v8(LayoutKind.YOLOV5), {"predictions": ("output0", pred)}, NC, 64, 64)
    np.testing.assert_allclose(out.boxes[1, 0], (25, 20, 35, 40))
    assert out.scores[1, 0] == pytest.approx(0.4)
    assert out.labels is not None and out.labels[1, 0] == 2
    assert out.scores.shape == (2, 2)  # the batch axis is kept: parity decodes whole batches


def test_end2end_normalised_boxes_are_scaled_to_the_input_and_float_classes_rounded() -> None:
    det = np.array([[[0.25, 0.5, 0.5, 1.0, 0.9, 2.0000002], [0, 0, 0, 0, 0.0, 0.0]]], np.float32)
    layout = DetectorLayout(LayoutKind.END2END, BoxUnits.NORMALISED)
    out = decode(layout, {"detections": ("output0", det)}, NC, 96, 160)
    np.testing.assert_allclose(out.boxes[0, 0], (40, 48, 80, 96))
    assert out.labels is not None and out.labels[0, 0] == 2


def test_dets_labels_and_torchvision_without_a_batch_axis() -> None:
    dets = np.array([[[1, 2, 3, 4, 0.6]]], np.float32)
    out = decode(DetectorLayout(LayoutKind.DETS_LABELS),
                 {"dets": ("dets", dets), "labels": ("labels", np.array([[2]], np.int64))}, NC, 8, 8)
    assert out.labels is not None and (out.boxes.shape, out.labels[0, 0]) == ((1, 1, 4), 2)
    tv = decode(DetectorLayout(LayoutKind.TORCHVISION),
                {"boxes": ("boxes", np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32)),
                 "scores": ("scores", np.array([0.9, 0.3], np.float32)),
                 "labels": ("labels", np.array([1, 2], np.int64))}, NC, 8, 8)
    assert tv.boxes.shape == (1, 2, 4) and tv.labels is not None and list(tv.labels[0]) == [1, 2]
    empty = decode(DetectorLayout(LayoutKind.TORCHVISION),
                   {"boxes": ("boxes", np.zeros((0, 4), np.float32)), "scores": ("scores", np.zeros(0, np.float32)),
                    "labels": ("labels", np.zeros(0, np.int64))}, NC, 8, 8)
    assert empty.scores.shape == (1, 0)  # a model that kept nothing is a valid answer, not an error


@pytest.mark.parametrize(("layout", "shape", "expected"), [
    (LayoutKind.YOLOV8, (1, 8400, 7), "[1, 4+nc, N] = [1, 7, N] for 3 classes (it looks transposed"),
    (LayoutKind.YOLOV5, (1, 7, 8400), "[1, N, 5+nc] = [1, N, 8] for 3 classes (it looks like a YOLOv8 export"),
    (LayoutKind.END2END, (1, 300, 7), "[1, N, 6]"),
])
def test_a_shape_that_does_not_fit_the_layout_names_the_output_and_its_shape(
        layout: LayoutKind, shape: tuple[int, ...], expected: str) -> None:
    field = "detections" if layout is LayoutKind.END2END else "predictions"
    with pytest.raises(LayoutError) as info:
        decode(DetectorLayout(layout), {field: ("output0", np.zeros(shape, np.float32))}, NC, 640, 640,
               "bundle y")
    text = str(info.value)
    assert f"bundle y: output 'output0' has shape {list(shape)}; the {layout} layout expects" in text
    assert expected in text
    assert isinstance(info.value, BackendError)  # the detect stage's items become UNSCREENED model_error


def test_mismatched_labels_and_a_missing_output_are_refused() -> None:
    with pytest.raises(LayoutError, match=r"output 'labels' has shape \[1, 2\].*matching dets \[1, 3, 5\]"):
        decode(DetectorLayout(LayoutKind.DETS_LABELS), {"dets": ("dets", np.zeros((1, 3, 5), np.float32)),
                                                        "labels": ("labels", np.zeros((1, 2), np.int64))}, NC, 8, 8)
    specs = (OutputSpec("dets", "dets", ("N", "?", 5), "float32"), OutputSpec("labels", "labels", ("N", "?"), "int64"))
    with pytest.raises(LayoutError, match=r"reads output 'labels' \(graph name 'labels'\), which is missing; the "
                                          r"model returned \['dets'\]"):
        decode_outputs(specs, DetectorLayout(LayoutKind.DETS_LABELS), {"dets": np.zeros((1, 3, 5))}, NC, 8, 8)


def _detector_manifest():  # type: ignore[no-untyped-def]
    return load_bundle(REPO / "models" / "detector-classes", verify_hashes=False).manifest


def test_layout_and_threat_classes_round_trip_and_are_absent_from_older_bundles() -> None:
    shipped = _detector_manifest()
    assert shipped.layout is None and "threat_classes" in manifest_to_dict(shipped)  # detector-classes 1.3.1: cutter
    m = replace(shipped, threat_classes={})  # as every bundle made before the key
    data = manifest_to_dict(m)
    assert "layout" not in data and "threat_classes" not in data  # so every existing content hash still holds
    outputs = (OutputSpec("output0", "predictions", ("N", 4 + len(m.classes), "?"), "float32"),)
    imported = seal(replace(m, outputs=outputs, layout=DetectorLayout(LayoutKind.YOLOV8),
                            threat_classes={m.classes[0]: 0.4}, content_sha256=""))
    back = manifest_from_dict(manifest_to_dict(imported))
    assert back.layout == DetectorLayout(LayoutKind.YOLOV8) and back.threat_classes == {m.classes[0]: 0.4}


def test_manifest_rules_for_layouts_and_threat_classes() -> None:
    m = _detector_manifest()
    outputs = (OutputSpec("output0", "predictions", ("N", 7, "?"), "float32"),)
    with pytest.raises(BundleError, match="no output fills 'predictions', which a yolov8 layout must provide"):
        check_consistency(replace(m, layout=DetectorLayout(LayoutKind.YOLOV8)))
    with pytest.raises(BundleError, match="a yolov8 detector must name its classes"):
        check_consistency(replace(m, outputs=outputs, layout=DetectorLayout(LayoutKind.YOLOV8), classes=()))
    with pytest.raises(BundleError, match="threat_classes: 'bomb' not in classes"):
        check_consistency(replace(m, threat_classes={"bomb": 0.5}))
    with pytest.raises(BundleError, match=r"threshold 1.5 is outside \[0, 1\]"):
        check_consistency(replace(m, threat_classes={m.classes[0]: 1.5}))


def test_bgr_is_pc_in_reverse_order() -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    image = from_pseudo_colour(rgb)
    pc = compose(image, InputContract(channels=(Channel.PC,), height=4, width=6))
    bgr = compose(image, InputContract(channels=(Channel.BGR,), height=4, width=6))
    np.testing.assert_allclose(bgr[0], pc[0, ::-1])
    assert bgr[0, 0, 0, 0] == pytest.approx(50 / 255)


def test_letterbox_topleft_pads_right_and_bottom_only() -> None:
    centred = InputContract(channels=(Channel.PC,), height=64, width=64, resize=ResizePolicy.LETTERBOX)
    corner = replace(centred, resize=ResizePolicy.LETTERBOX_TOPLEFT)
    gc, gt = geometry((0, 0, 200, 100), centred), geometry((0, 0, 200, 100), corner)
    assert (gc.pad_x, gc.pad_y, gt.pad_x, gt.pad_y) == (0, 16, 0, 0)
    assert (gt.out_width, gt.out_height, gt.scale_x) == (64, 32, 0.32)
    image = from_pseudo_colour(np.zeros((100, 200, 3), np.uint8))  # black: the content; pad is 1.0 (air)
    x = compose(image, corner)
    assert x[0, :, :32].max() == 0.0 and x[0, :, 32:].min() == 1.0
