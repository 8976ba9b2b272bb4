"""The exit-camera overlay for the finish stage: an item's objects drawn on the camera frame that shows it.

Adapts the pipeline's records to ``edge.camera``: the frame is chosen by belt travel since the item's first
X-ray line (the firmware's encoder count at item start), the polygons are mapped through the stored
homography and lens model. Sub-component parts of anomalous objects go along as thin outlines (anomalous parts
red, benign parts green) under the objects' own outlines. Every problem (no camera, no calibration, no encoder
position, no frame) is a reason string, never an exception or a wait: the decision goes out regardless.
"""

from __future__ import annotations

import numpy as np

from edge.camera.mapping import CameraMapper
from edge.camera.overlay import ItemOverlayInput, OverlayObject, overlay_for_item
from edge.camera.ring import FrameRing
from edge.camera.select import ItemTravel
from edge.config.camera import CameraConfig
from edge.stages.localise import LocalisedItem


class CameraOverlayRenderer:
    """``CameraOverlay`` for ``FinishStage``: (JPEG, None) or (None, why not)."""

    def __init__(self, ring: FrameRing, mapper: CameraMapper | None, config: CameraConfig) -> None:
        self._ring = ring
        self._mapper = mapper
        self._config = config

    def __call__(self, item: LocalisedItem) -> tuple[bytes | None, str | None]:
        if item.meta.encoder_start is None:
            return None, "item has no belt position from the scanner (no firmware link): camera frame unknown"
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
        return overlay.jpeg, overlay.reason
