"""Finish: decide the item (max rule) and attach its overlay picture.

The overlay is drawn on the exit-camera frame when a camera and its calibration are available (``edge.camera``,
through the ``overlay`` callable given at construction); otherwise on the item's own pseudo-colour X-ray image,
and ``overlay_note`` says why. A missing or failing camera never delays or blocks the decision.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.condition.image import ConditionedImage
from edge.records import Decision, ObjectResult
from edge.stages.decide import decide
from edge.stages.localise import LocalisedItem

log = logging.getLogger(__name__)

RED = (0, 0, 255)
GREEN = (0, 200, 0)

@dataclass(frozen=True, slots=True, eq=False)
class CameraView:
    """What the exit camera adds to a decision: the overlay JPEG (or ``note``: why there is none) and the
    item's objects with ``polygon_camera`` filled in (``None`` when no camera frame could be chosen)."""

    jpeg: bytes | None
    note: str | None = None
    objects: tuple[ObjectResult, ...] | None = None


CameraOverlay = Callable[[LocalisedItem], CameraView]
"""Renders the item's objects on its exit-camera frame and maps their outlines onto it."""


def xray_canvas(image: ConditionedImage) -> NDArray[np.uint8]:
    """A BGR picture of the item for overlays: its pseudo-colour, else its grey transmission."""
    if image.pc is not None:
        return np.ascontiguousarray(cv2.cvtColor(image.pc, cv2.COLOR_RGB2BGR))
    grey = np.clip((image.t_high if image.t_high is not None else np.ones(image.shape, np.float32)) * 255, 0, 255)
    return np.ascontiguousarray(cv2.cvtColor(grey.astype(np.uint8), cv2.COLOR_GRAY2BGR))


def _outline(canvas: NDArray[np.uint8], polygon: tuple[tuple[float, float], ...], colour: tuple[int, int, int],
             thickness: int) -> None:
    points = np.round(np.asarray(polygon, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
    if len(points) >= 2:
        cv2.polylines(canvas, [points], True, colour, thickness, cv2.LINE_AA)


def draw_xray_overlay(image: ConditionedImage, objects: tuple[ObjectResult, ...], quality: int = 85) -> bytes:
    """JPEG of the X-ray with anomalous regions red and benign objects green.

    Sub-component parts of anomalous objects are drawn first as thin outlines (benign parts green, anomalous
    parts red on top, so a shared edge reads red); the objects' own outlines go over them as before.
    """
    canvas = xray_canvas(image)
    parts = [p for o in objects for p in o.parts]
    for part in sorted(parts, key=lambda p: p.anomalous):
        _outline(canvas, part.polygon_xray, RED if part.anomalous else GREEN, 1)
    for obj in sorted(objects, key=lambda o: o.anomalous):
        _outline(canvas, obj.polygon_xray, RED if obj.anomalous else GREEN, 3 if obj.anomalous else 2)
    ok, jpeg = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(jpeg)


class FinishStage:
    """Turns a localised item into its ``Decision`` with an overlay."""

    def __init__(self, camera_overlay: CameraOverlay | None = None) -> None:
        self._camera = camera_overlay

    def __call__(self, item: LocalisedItem) -> Decision:
        jpeg: bytes | None = None
        note: str | None = None
        objects = item.objects
        if self._camera is not None:
            try:
                view = self._camera(item)
                jpeg, note = view.jpeg, view.note
                if view.objects is not None and len(view.objects) == len(item.objects):
                    objects = view.objects
            except Exception as exc:  # the camera path must never cost the decision
                log.error("camera overlay failed", extra={"item_id": item.meta.item_id, "error": str(exc)})
                jpeg, note = None, f"camera overlay failed: {exc}"
        else:
            note = "no exit camera configured; overlay drawn on the X-ray image"
        if jpeg is None:
            try:
                jpeg = draw_xray_overlay(item.image, item.objects)
            except Exception as exc:
                log.error("x-ray overlay failed", extra={"item_id": item.meta.item_id, "error": str(exc)})
                note = f"{note}; x-ray overlay failed: {exc}" if note else f"x-ray overlay failed: {exc}"
        return decide(item.meta, objects, time.time(), time.monotonic(), item.models.refs, jpeg, note)
