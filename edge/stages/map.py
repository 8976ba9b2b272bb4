"""Map: the decided item onto the exit camera (outlines on its frame) and its overlay picture, capped once.

Where it sits: the last step of the chain (decide → map); returns the ``Decision`` the sinks publish. The
verdict is the decide step's; this step adds ``polygon_camera`` outlines, ``overlay_jpeg`` and ``overlay_note``.

The overlay is drawn on the exit-camera frame when a camera and its calibration are available (the ``camera``
callable given at construction, normally :class:`CameraOverlayRenderer`): the frame is chosen by belt travel
since the item's first X-ray line (the firmware's encoder count at item start), the outlines are mapped through
the stored homography and lens model once, and the same points are drawn and published (``polygon_camera``, in
the camera's full-resolution pixels, on the plane ``camera.overlay_height_mm`` above the belt). The camera sits
downstream of the X-ray line, so an item is usually decided before it passes the camera: with
``camera.wait_s`` > 0 this step waits (that long at most, and never into the item's deadline) for the frame that
shows it, which delays the decision by the belt's travel time to the camera. Otherwise the
overlay is drawn on the item's own X-ray picture and ``overlay_note`` says why. Both pictures come from
``edge.camera.overlay`` (one palette) and one JPEG cap (``max_bytes``: the smallest of ``camera.overlay_max_bytes``
and ``mqtt.image_max_bytes``), so the MQTT sink never re-encodes. A missing or failing camera never delays or
blocks the decision.

Must not: change the verdict, or import another stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.camera.mapping import CameraMapper
from edge.camera.overlay import (
    REASON_COLOURS,
    REASON_NAMES,
    ItemOverlayInput,
    OverlayObject,
    draw_on_xray,
    fit_image,
    overlay_for_item,
)
from edge.camera.ring import FrameRing
from edge.camera.select import ItemTravel
from edge.condition.image import ConditionedImage
from edge.config.camera import CameraConfig
from edge.records import DecidedItem, Decision, ObjectResult, Polygon

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 250_000
"""The overlay cap when neither a camera nor MQTT names one (``camera.overlay_max_bytes``' default)."""

DEADLINE_MARGIN_S = 1.0
"""The camera wait ends this long before the item's deadline, so the decision still settles in time."""

XRAY_QUALITY = 85
"""JPEG quality the X-ray overlay starts at (the camera's starts at 90: a photo survives JPEG less well)."""


@dataclass(frozen=True, slots=True, eq=False)
class CameraView:
    """What the exit camera adds to a decision: the overlay JPEG (or ``note``: why there is none) and the
    item's objects with ``polygon_camera`` filled in (``None`` when no camera frame could be chosen)."""

    jpeg: bytes | None
    note: str | None = None
    objects: tuple[ObjectResult, ...] | None = None


CameraOverlay = Callable[[DecidedItem], CameraView]
"""Renders the item's objects on its exit-camera frame and maps their outlines onto it."""


def _reason_colour(obj: ObjectResult) -> tuple[int, int, int] | None:
    """The colour of the object's first reason (known threat class before classifier before anomaly)."""
    kinds = {r.kind.value for r in obj.reasons}
    return next((REASON_COLOURS[k] for k in REASON_COLOURS if k in kinds), None)


def _object_label(obj: ObjectResult) -> str:
    """What is written beside an object: its reasons with their scores, else its anomaly score."""
    if obj.reasons:
        return f"{obj.label or 'object'} " + " ".join(f"{r.code} {r.score:.2f}" for r in obj.reasons)
    return f"{obj.label or 'object'} {obj.anomaly_score:.2f}" if obj.anomaly_score is not None else ""


def reason_legend(objects: tuple[ObjectResult, ...]) -> tuple[tuple[str, tuple[int, int, int]], ...]:
    """Legend entries for the reasons on this picture, in colour order (empty when nothing alarms)."""
    kinds = {r.kind.value for o in objects for r in o.reasons}
    return tuple((REASON_NAMES[k], REASON_COLOURS[k]) for k in REASON_COLOURS if k in kinds)


def overlay_objects(objects: tuple[ObjectResult, ...]) -> tuple[OverlayObject, ...]:
    """Parts (thin, under) then the objects themselves, in X-ray pixels; outlines of fewer than 3 points skipped.
    An alarming object takes its first reason's colour (``REASON_COLOURS``)."""
    parts = tuple(OverlayObject(np.asarray(p.polygon_xray, dtype=np.float64), p.anomalous, thin=True,
                                colour=_reason_colour(o))
                  for o in objects for p in o.parts if len(p.polygon_xray) >= 3)
    whole = tuple(
        OverlayObject(np.asarray(o.polygon_xray, dtype=np.float64), o.anomalous, _object_label(o),
                      colour=_reason_colour(o))
        for o in objects if len(o.polygon_xray) >= 3
    )
    return parts + whole


def xray_canvas(image: ConditionedImage) -> NDArray[np.uint8]:
    """A BGR picture of the item for overlays: its pseudo-colour, else its grey transmission."""
    if image.pc is not None:
        return np.ascontiguousarray(cv2.cvtColor(image.pc, cv2.COLOR_RGB2BGR))
    grey = np.clip((image.t_high if image.t_high is not None else np.ones(image.shape, np.float32)) * 255, 0, 255)
    return np.ascontiguousarray(cv2.cvtColor(grey.astype(np.uint8), cv2.COLOR_GRAY2BGR))


def draw_xray_overlay(image: ConditionedImage, objects: tuple[ObjectResult, ...], quality: int = XRAY_QUALITY,
                      max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """JPEG of the X-ray with anomalous regions red and benign objects green (the camera overlay's palette).

    Sub-component parts of anomalous objects are drawn first as thin outlines (benign parts green, anomalous
    parts red on top, so a shared edge reads red); the objects' own outlines go over them.
    """
    canvas = draw_on_xray(xray_canvas(image), overlay_objects(objects), reason_legend(objects))
    return fit_image(canvas, max_bytes, quality).jpeg


class CameraOverlayRenderer:
    """``CameraOverlay`` for ``MapStage``: the overlay (or why not) and the outlines on the camera frame."""

    def __init__(self, ring: FrameRing, mapper: CameraMapper | None, config: CameraConfig,
                 max_bytes: int | None = None) -> None:
        self._ring = ring
        self._mapper = mapper
        self._config = config
        self._max_bytes = max_bytes if max_bytes is not None else config.overlay_max_bytes

    def __call__(self, item: DecidedItem) -> CameraView:
        meta, objects = item.meta, item.decision.objects
        if meta.encoder_start is None:
            return CameraView(None, "item has no belt position from the scanner (no firmware link): camera frame "
                                    "unknown")
        height, width = item.image.shape
        pitch = self._mapper.pitch_mm if self._mapper is not None else 0.8
        drawn = overlay_objects(objects)
        overlay_input = ItemOverlayInput(
            item_id=meta.item_id,
            objects=drawn,
            verdict=item.decision.verdict.value.upper(),
            height_mm=self._config.overlay_height_mm,
            legend=reason_legend(objects),
        )
        overlay = overlay_for_item(
            self._ring, self._mapper, overlay_input, ItemTravel(float(meta.encoder_start), height * pitch),
            self._config.encoder_mm_per_count, xray_shape=(height, width), max_bytes=self._max_bytes,
            tolerance_mm=self._config.select_tolerance_mm, wait_until_mono_s=self._wait_until(meta.deadline_mono),
        )
        if self._mapper is None or overlay.travel_mm is None:
            return CameraView(overlay.jpeg, overlay.reason)
        if len(overlay.outlines) == len(drawn):
            on_camera = iter(overlay.outlines)
            parts = [[_published(next(on_camera)) for p in o.parts if len(p.polygon_xray) >= 3] for o in objects]
            whole = [_published(next(on_camera)) if len(o.polygon_xray) >= 3 else None for o in objects]
        else:  # nothing drawn (rendering failed before mapping): map the outlines for the decision alone
            parts = [[self._on_camera(p.polygon_xray, overlay.travel_mm) for p in o.parts
                      if len(p.polygon_xray) >= 3] for o in objects]
            whole = [self._on_camera(o.polygon_xray, overlay.travel_mm) for o in objects]
        return CameraView(overlay.jpeg, overlay.reason,
                          tuple(_with_camera(o, w, ps) for o, w, ps in zip(objects, whole, parts, strict=True)))

    def _wait_until(self, deadline_mono: float) -> float | None:
        """How long the item may be waited for on its way to the camera: ``camera.wait_s`` from now, and never
        within ``DEADLINE_MARGIN_S`` of the item's deadline (past it the item is UNSCREENED and the wait lost)."""
        if self._config.wait_s <= 0:
            return None
        return min(time.monotonic() + self._config.wait_s, deadline_mono - DEADLINE_MARGIN_S)

    def _on_camera(self, polygon: Polygon, travel_mm: float) -> Polygon | None:
        assert self._mapper is not None
        if len(polygon) < 3:
            return None
        return _published(self._mapper.xray_to_camera(np.asarray(polygon, dtype=np.float64), travel_mm,
                                                       self._config.overlay_height_mm))


def _published(points: NDArray[np.float64]) -> Polygon | None:
    """Camera points as a published outline (0.1 px), or None when the mapping left the frame's plane."""
    if not np.isfinite(points).all():
        return None
    return tuple((round(float(x), 1), round(float(y), 1)) for x, y in points)


def _with_camera(obj: ObjectResult, outline: Polygon | None, parts: list[Polygon | None]) -> ObjectResult:
    """``obj`` with its outline and its drawable parts' outlines (in order) on the camera frame."""
    on_camera = iter(parts)
    mapped = tuple(replace(p, polygon_camera=next(on_camera) if len(p.polygon_xray) >= 3 else None)
                   for p in obj.parts)
    return replace(obj, polygon_camera=outline, parts=mapped)


class MapStage:
    """The map step: camera outlines and the overlay picture added to the decided item's ``Decision``.

    ``max_bytes`` is the one overlay cap (the X-ray picture's; the camera renderer is built with the same).
    """

    def __init__(self, camera_overlay: CameraOverlay | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._camera = camera_overlay
        self._max_bytes = max_bytes

    def __call__(self, item: DecidedItem) -> Decision:
        decision = item.decision
        jpeg: bytes | None = None
        note: str | None = None
        objects = decision.objects
        if self._camera is not None:
            try:
                view = self._camera(item)
                jpeg, note = view.jpeg, view.note
                if view.objects is not None and len(view.objects) == len(objects):
                    objects = view.objects
            except Exception as exc:  # the camera path must never cost the decision
                log.error("camera overlay failed", extra={"item_id": item.meta.item_id, "error": str(exc)})
                jpeg, note = None, f"camera overlay failed: {exc}"
        else:
            note = "no exit camera configured; overlay drawn on the X-ray image"
        if jpeg is None:
            try:
                jpeg = draw_xray_overlay(item.image, decision.objects, max_bytes=self._max_bytes)
            except Exception as exc:
                log.error("x-ray overlay failed", extra={"item_id": item.meta.item_id, "error": str(exc)})
                note = f"{note}; x-ray overlay failed: {exc}" if note else f"x-ray overlay failed: {exc}"
        # The decision is complete now: its time and latency are those of the record the sinks receive.
        now_wall, now_mono = time.time(), time.monotonic()
        return replace(decision, objects=objects, overlay_jpeg=jpeg, overlay_note=note, decided_wall=now_wall,
                       latency_ms=max(0.0, (now_mono - item.meta.scan_end_mono) * 1000.0))
