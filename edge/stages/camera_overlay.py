"""The exit-camera overlay for the finish stage: an item's objects drawn on the camera frame that shows it.

Adapts the pipeline's records to ``edge.camera``: the frame is chosen by belt travel since the item's first
X-ray line (the firmware's encoder count at item start), the polygons are mapped through the stored
homography and lens model. Sub-component parts of anomalous objects go along as thin outlines (anomalous parts
red, benign parts green) under the objects' own outlines. Every problem (no camera, no calibration, no encoder
position, no frame) is a reason string, never an exception or a wait: the decision goes out regardless.

Whenever a frame was chosen, every object's and part's outline is also mapped onto it (``polygon_camera``, in
the camera's full-resolution pixels, lens distortion applied, on the plane ``camera.overlay_height_mm`` above
the belt), so the control room can draw the alarm on its own copy of the frame.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edge.camera.mapping import CameraMapper
from edge.camera.overlay import ItemOverlayInput, OverlayObject, overlay_for_item
from edge.camera.ring import FrameRing
from edge.camera.select import ItemTravel
from edge.config.camera import CameraConfig
from edge.records import ObjectResult
from edge.stages.finish import CameraView
from edge.stages.localise import LocalisedItem, Polygon


class CameraOverlayRenderer:
    """``CameraOverlay`` for ``FinishStage``: the overlay (or why not) and the outlines on the camera frame."""

    def __init__(self, ring: FrameRing, mapper: CameraMapper | None, config: CameraConfig) -> None:
        self._ring = ring
        self._mapper = mapper
        self._config = config

    def __call__(self, item: LocalisedItem) -> CameraView:
        if item.meta.encoder_start is None:
            return CameraView(None, "item has no belt position from the scanner (no firmware link): camera frame "
                                    "unknown")
        height, width = item.image.shape
        pitch = self._mapper.pitch_mm if self._mapper is not None else 0.8
        anomalous = any(o.anomalous for o in item.objects)
        parts = tuple(OverlayObject(np.asarray(p.polygon_xray, dtype=np.float64), p.anomalous, thin=True)
                      for o in item.objects for p in o.parts if len(p.polygon_xray) >= 3)
        objects = tuple(
            OverlayObject(np.asarray(o.polygon_xray, dtype=np.float64), o.anomalous,
                          f"{o.label or 'object'} {o.anomaly_score:.2f}" if o.anomaly_score is not None else "")
            for o in item.objects if len(o.polygon_xray) >= 3
        )
        overlay_input = ItemOverlayInput(
            item_id=item.meta.item_id,
            objects=parts + objects,
            verdict="ALARM" if anomalous else "CLEAR",
            height_mm=self._config.overlay_height_mm,
        )
        overlay = overlay_for_item(
            self._ring, self._mapper, overlay_input, ItemTravel(float(item.meta.encoder_start), height * pitch),
            self._config.encoder_mm_per_count, xray_shape=(height, width), max_bytes=self._config.overlay_max_bytes,
            tolerance_mm=self._config.select_tolerance_mm,
        )
        if self._mapper is None or overlay.travel_mm is None:
            return CameraView(overlay.jpeg, overlay.reason)
        return CameraView(overlay.jpeg, overlay.reason,
                          tuple(self._mapped(o, overlay.travel_mm) for o in item.objects))

    def _mapped(self, obj: ObjectResult, travel_mm: float) -> ObjectResult:
        parts = tuple(replace(p, polygon_camera=self._on_camera(p.polygon_xray, travel_mm)) for p in obj.parts)
        return replace(obj, polygon_camera=self._on_camera(obj.polygon_xray, travel_mm), parts=parts)

    def _on_camera(self, polygon: Polygon, travel_mm: float) -> Polygon | None:
        assert self._mapper is not None
        if len(polygon) < 3:
            return None
        pts = self._mapper.xray_to_camera(np.asarray(polygon, dtype=np.float64), travel_mm,
                                          self._config.overlay_height_mm)
        if not np.isfinite(pts).all():
            return None
        return tuple((round(float(x), 1), round(float(y), 1)) for x, y in pts)
