"""Sub-component parts on the exit-camera overlay: mapped with the objects, drawn as thin red/green outlines."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from edge.camera.mapping import CameraMapper
from edge.camera.ring import FrameRing, StampedFrame
from edge.config.camera import CameraConfig
from edge.config.localise import LocaliseConfig
from edge.records import ItemMeta, ObjectResult, RawItem
from edge.stages.camera_overlay import CameraOverlayRenderer
from edge.stages.localise import LocalisedItem, localise_object
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
    item = LocalisedItem(meta, image, RawItem(meta, image=np.zeros((2, 2), np.uint8)), (obj,), None)  # type: ignore[arg-type]
    jpeg, reason = renderer(item)
    assert jpeg is not None, reason
    return np.asarray(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), dtype=int)


def test_parts_are_drawn_on_the_camera_frame() -> None:
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
    flagged = localise_object(scene._scored(0.9), 0, scene._scene(), scene.CONTRACT, LocaliseConfig())
    assert flagged.parts
    with_parts = _render(renderer, flagged)
    without = _render(renderer, replace(flagged, parts=()))

    def greens(img: np.ndarray) -> int:
        return int(((img[..., 1] - np.maximum(img[..., 0], img[..., 2])) > 60).sum())

    def reds(img: np.ndarray) -> np.ndarray:
        return np.asarray((img[..., 2] - np.maximum(img[..., 0], img[..., 1])) > 60)

    assert greens(without) < 50  # the anomalous object alone is red only
    assert greens(with_parts) > 300  # the benign parts' outlines
    # red parts stay around the object's own red outline (the disc): no red far from it
    near = cv2.dilate(reds(without).astype(np.uint8), np.ones((41, 41), np.uint8)).astype(bool)
    assert reds(with_parts)[~near].sum() < 0.05 * reds(with_parts).sum()
