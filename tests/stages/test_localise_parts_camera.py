"""Sub-component parts on the exit-camera overlay: mapped with the objects, drawn as thin red/green outlines."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.camera.mapping import CameraMapper
from edge.camera.ring import FrameRing, StampedFrame
from edge.config.camera import CameraConfig
from edge.config.localise import LocaliseConfig
from edge.records import DecidedItem, ItemMeta, ObjectResult
from edge.stages.decide import decide
from edge.stages.localise import localise_object
from edge.stages.map import CameraOverlayRenderer
from sim.camera import ExitCamera
from tests.camera.camera_helpers import calibration_from_truth

_spec = importlib.util.spec_from_file_location("parts_scene", Path(__file__).with_name("test_localise_parts.py"))
assert _spec is not None and _spec.loader is not None
scene = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scene)

MM_PER_COUNT = 0.8
START_COUNT = 1000.0


def _render(renderer: CameraOverlayRenderer, obj: ObjectResult) -> np.ndarray:
    image = scene._scene()
    meta = ItemMeta("lane-1-1", "lane-1", 1, 0.0, 1.0, 0.0, 1.0, 1e9, encoder_start=int(START_COUNT))
    item = DecidedItem(meta, image, decide(meta, (obj,), 0.0, 1.0))
    view = renderer(item)
    assert view.jpeg is not None, view.note
    return np.asarray(cv2.imdecode(np.frombuffer(view.jpeg, np.uint8), cv2.IMREAD_COLOR), dtype=int)


def _setup() -> tuple[ExitCamera, CameraMapper, CameraOverlayRenderer]:
    cam = ExitCamera()
    mapper = CameraMapper(calibration_from_truth(cam))
    ring = FrameRing(20)
    view = mapper.view_centre_travel_mm()
    item_mm = scene.H * mapper.pitch_mm
    for k in range(-3, 4):  # black frames around the moment the item's centre passes the view centre
        travel = view + item_mm / 2 + 40.0 * k
        black = np.zeros((cam.spec.height_px, cam.spec.width_px, 3), np.uint8)
        ring.push(StampedFrame(black, float(k), START_COUNT + travel / MM_PER_COUNT, k + 3))
    renderer = CameraOverlayRenderer(ring, mapper, CameraConfig(device=0, encoder_mm_per_count=MM_PER_COUNT))
    return cam, mapper, renderer


def test_parts_are_drawn_on_the_camera_frame() -> None:
    _, _, renderer = _setup()
    flagged = localise_object(scene._scored(0.9), 0, scene._scene(), scene.CONTRACT, LocaliseConfig())
    assert flagged.parts
    with_parts = _render(renderer, flagged)
    without = _render(renderer, replace(flagged, parts=()))

    def greens(img: np.ndarray) -> int:
        return int(((img[..., 1] - np.maximum(img[..., 0], img[..., 2])) > 60).sum())

    def reds(img: np.ndarray) -> np.ndarray:  # the alarm colour of an anomaly (magenta)
        return np.asarray((np.minimum(img[..., 2], img[..., 0]) - img[..., 1]) > 60)

    assert greens(without) < 50  # the anomalous object alone is red only
    assert greens(with_parts) > 300  # the benign parts' outlines
    # red parts stay around the object's own red outline (the disc): no red far from it
    near = cv2.dilate(reds(without).astype(np.uint8), np.ones((41, 41), np.uint8)).astype(bool)
    assert reds(with_parts)[~near].sum() < 0.05 * reds(with_parts).sum()


def test_outlines_are_mapped_onto_the_camera_frame_for_the_decision() -> None:
    cam, _, renderer = _setup()
    flagged = localise_object(scene._scored(0.9), 0, scene._scene(), scene.CONTRACT, LocaliseConfig())
    image = scene._scene()
    meta = ItemMeta("lane-1-1", "lane-1", 1, 0.0, 1.0, 0.0, 1.0, 1e9, encoder_start=int(START_COUNT))
    item = DecidedItem(meta, image, decide(meta, (flagged,), 0.0, 1.0))
    view = renderer(item)
    assert view.jpeg is not None and view.objects is not None
    (mapped,) = view.objects
    assert mapped.polygon_camera is not None and len(mapped.polygon_camera) == len(flagged.polygon_xray)
    poly = np.asarray(mapped.polygon_camera)
    assert (poly[:, 0] >= 0).all() and (poly[:, 0] < cam.spec.width_px).all()
    assert (poly[:, 1] >= 0).all() and (poly[:, 1] < cam.spec.height_px).all()
    # The published outline is where the overlay drew red: its centre lies on the red-shaded region.
    img = np.asarray(cv2.imdecode(np.frombuffer(view.jpeg, np.uint8), cv2.IMREAD_COLOR), dtype=int)
    scale = img.shape[1] / cam.spec.width_px
    # an anomaly's colour is magenta (edge.camera.overlay.REASON_COLOURS); the legend swatch is bottom left
    red = (np.minimum(img[..., 2], img[..., 0]) - img[..., 1]) > 60
    red[:45] = False  # the "ALARM <item>" caption in the top-left corner
    red[img.shape[0] - 60:, :200] = False
    red[: max(0, int(poly[:, 1].min() * scale) - 2)] = False  # the object's label, drawn above its outline
    ys, xs = np.nonzero(red)
    assert abs(poly[:, 0].mean() * scale - xs.mean()) < 15 and abs(poly[:, 1].mean() * scale - ys.mean()) < 15
    assert all(p.polygon_camera is not None and len(p.polygon_camera) == len(p.polygon_xray) for p in mapped.parts)
    # Without a belt position there is no frame: the view says why and maps nothing.
    unplaced = renderer(replace(item, meta=replace(meta, encoder_start=None)))
    assert unplaced.jpeg is None and unplaced.objects is None and "belt position" in (unplaced.note or "")


def test_finish_publishes_the_camera_outlines_and_falls_back_when_the_camera_fails() -> None:
    from edge.publish.payloads import decision_payload
    from edge.publish.topics import RecordKind
    from edge.records import LocalisedItem
    from edge.stages.decide import DecideStage
    from edge.stages.map import CameraView, MapStage

    _, _, renderer = _setup()
    flagged = localise_object(scene._scored(0.9), 0, scene._scene(), scene.CONTRACT, LocaliseConfig())
    meta = ItemMeta("lane-1-1", "lane-1", 1, 0.0, 1.0, 0.0, 1.0, 1e9, encoder_start=int(START_COUNT))

    class _NoModels:  # the finish stage only reads which models decided (none here)
        refs = ()

    item = DecideStage()(LocalisedItem(meta, scene._scene(), (flagged,), _NoModels()))  # type: ignore[arg-type]
    decision = MapStage(renderer)(item)
    body: Any = decision_payload(decision, "site", RecordKind.ITEM, None, None, decision.overlay_note)
    (obj,) = body["objects"]
    assert obj["polygon_camera"] and len(obj["polygon_camera"]) == len(flagged.polygon_xray)
    assert all(part["polygon_camera"] for part in obj["parts"])

    def broken(_: DecidedItem) -> CameraView:
        raise RuntimeError("camera unplugged")

    fallback = MapStage(broken)(item)
    assert fallback.overlay_jpeg is not None and "camera unplugged" in (fallback.overlay_note or "")
    assert fallback.objects[0].polygon_camera is None
