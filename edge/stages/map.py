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

UNSCREENED items never reach this step (the pipeline settles them wherever they fail: intake, a stage, the
watchdog, shutdown), so :class:`UnscreenedOverlay` draws theirs: the whole parcel outlined on the exit-camera
frame (its extent along the belt from its encoder counts or its X-ray lines, across the belt the X-ray frames'
width), else its raw X-ray picture when frames exist, so the operator can find the parcel the box could not
screen. It never raises and never waits past the time it is given.

Must not: change the verdict, or import another stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

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
from edge.records import DecidedItem, Decision, ItemMeta, ObjectResult, Polygon, RawItem

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
        self.channels: int | None = None
        """Detector channels of the last item seen with frames: the belt width an UNSCREENED item without
        frames is outlined across (the detector does not change between items)."""

    def __call__(self, item: DecidedItem) -> CameraView:
        meta, objects = item.meta, item.decision.objects
        height, width = item.image.shape
        self.channels = width
        if meta.encoder_start is None:
            return CameraView(None, "item has no belt position from the scanner (no firmware link): camera frame "
                                    "unknown")
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

    def parcel(self, meta: ItemMeta, verdict: str, shape: tuple[int, int] | None,
               until_mono: float | None) -> CameraView:
        """The whole parcel outlined on its exit-camera frame (an UNSCREENED item: no objects to show).

        ``shape`` is (lines, channels) of its X-ray frames when they exist; without them the parcel's length
        comes from its encoder counts (``ItemStart`` to ``ItemEnd``) and its width from the last item seen with
        frames. ``until_mono`` caps the camera wait (``camera.wait_s``, never into the deadline) from above.
        """
        if meta.encoder_start is None:
            return CameraView(None, "item has no belt position from the scanner (no firmware link): camera frame "
                                    "unknown")
        if self._mapper is None:
            return CameraView(None, "camera not calibrated: no homography (run `edge calibrate homography`)")
        pitch = self._mapper.pitch_mm
        mm_per_count = self._config.encoder_mm_per_count
        if shape is not None:
            lines, channels = shape
            self.channels = channels
        else:
            if meta.encoder_end is None or meta.encoder_end <= meta.encoder_start:
                return CameraView(None, "no X-ray frames and no belt range from the scanner: parcel extent unknown")
            if self.channels is None:
                return CameraView(None, "no X-ray frames and no item scanned yet: belt width unknown")
            lines = max(1, round((meta.encoder_end - meta.encoder_start) * mm_per_count / pitch))
            channels = self.channels
        wait_until = self._wait_until(meta.deadline_mono)
        if wait_until is not None and until_mono is not None:
            wait_until = min(wait_until, until_mono)
        overlay = overlay_for_item(
            self._ring, self._mapper, ItemOverlayInput(item_id=meta.item_id, objects=(), verdict=verdict,
                                                       height_mm=self._config.overlay_height_mm),
            ItemTravel(float(meta.encoder_start), lines * pitch), mm_per_count, xray_shape=(lines, channels),
            max_bytes=self._max_bytes, tolerance_mm=self._config.select_tolerance_mm, wait_until_mono_s=wait_until,
        )
        return CameraView(overlay.jpeg, overlay.reason)

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


@runtime_checkable
class ParcelOverlay(Protocol):
    """Outlines a whole parcel on its exit-camera frame (:meth:`CameraOverlayRenderer.parcel`)."""

    def parcel(self, meta: ItemMeta, verdict: str, shape: tuple[int, int] | None,
               until_mono: float | None) -> CameraView: ...


def raw_xray_canvas(raw: RawItem) -> NDArray[np.uint8] | None:
    """A BGR picture of an item from its raw frames (no conditioning: the item may have failed there), or None.

    Raw counts are scaled by the 99th percentile of the high-energy image (about the open beam), so the parcel
    shows dark on a light belt as on a scanner's own screen; a degraded source's picture is taken as it is.
    """
    if raw.high is not None:
        high = np.asarray(raw.high, dtype=np.float32)
        if high.ndim != 2 or high.size == 0:
            return None
        top = float(np.percentile(high[::4, ::4], 99.0))  # a sixteenth of the pixels gives the same level
        grey = np.clip(high * (255.0 / top), 0, 255) if top > 0 else np.zeros_like(high)
        return np.ascontiguousarray(cv2.cvtColor(grey.astype(np.uint8), cv2.COLOR_GRAY2BGR))
    if raw.image is not None:
        image = np.asarray(raw.image, dtype=np.uint8)
        if image.ndim == 2:
            return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
        if image.ndim == 3 and image.shape[2] == 3:
            return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return None


def _frames_shape(raw: RawItem | None) -> tuple[int, int] | None:
    """(lines, channels) of the item's frames when it has usable ones."""
    if raw is None or raw.problem is not None:
        return None
    frames = raw.high if raw.high is not None else raw.image
    if frames is None or frames.ndim < 2 or frames.shape[0] < 1 or frames.shape[1] < 1:
        return None
    return int(frames.shape[0]), int(frames.shape[1])


class UnscreenedOverlay:
    """The overlay of an UNSCREENED decision: the parcel outlined on the exit camera, else its raw X-ray.

    Called by the pipeline off its screening and publishing threads (``edge.overlay_handoff``), with the time
    the decision may wait for it (``until_mono``). Never raises: a failure becomes ``overlay_note`` and the
    decision goes out as it was, UNSCREENED.
    """

    def __init__(self, camera: ParcelOverlay | None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._camera = camera
        self._max_bytes = max_bytes

    def __call__(self, decision: Decision, meta: ItemMeta, raw: RawItem | None, until_mono: float) -> Decision:
        notes: list[str] = []
        jpeg: bytes | None = None
        shape = _frames_shape(raw)
        if self._camera is not None:
            try:
                view = self._camera.parcel(meta, decision.verdict.value.upper(), shape, until_mono)
                jpeg = view.jpeg
                if view.note:
                    notes.append(view.note)
            except Exception as exc:  # the overlay must never cost the decision
                log.error("camera overlay of an unscreened item failed",
                          extra={"item_id": meta.item_id, "error": str(exc)})
                notes.append(f"camera overlay failed: {exc}")
        else:
            notes.append("no exit camera configured")
        if jpeg is None:
            if raw is not None and shape is not None:
                try:
                    canvas = raw_xray_canvas(raw)
                    if canvas is not None:
                        jpeg = fit_image(canvas, self._max_bytes, XRAY_QUALITY).jpeg
                        notes.append("overlay is the item's raw X-ray")
                except Exception as exc:
                    log.error("x-ray overlay of an unscreened item failed",
                              extra={"item_id": meta.item_id, "error": str(exc)})
                    notes.append(f"x-ray overlay failed: {exc}")
            else:
                notes.append("no X-ray frames for this item")
        # the record leaves now: its time and latency are those of the record the sinks receive (as MapStage)
        return replace(decision, overlay_jpeg=jpeg, overlay_note="; ".join(notes) if notes else None,
                       decided_wall=time.time(),
                       latency_ms=max(decision.latency_ms, (time.monotonic() - meta.scan_end_mono) * 1000.0))
