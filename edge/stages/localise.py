"""Localise: where inside each object the anomaly is, as a polygon in item pixels, and which parts are wrong.

The scorer's anomaly map covers the model input; :func:`map_over_region` takes back the part that shows the
crop (letterboxed crops are padded, and the padding is not the object) and resizes it to the crop's size in
the item. It is thresholded at the object's threshold (maps and scores share one normalisation in our bundles
and in anomalib's) and the largest region becomes the polygon. An anomalous object whose map has no pixel above
threshold is outlined whole; benign objects are outlined by their box. Anomalous objects with a map are also
split into scored sub-component parts (``edge.subparts``, seed 002) when ``localise.subparts`` is on; a
failure there is logged and leaves the object without parts, never without its verdict. The result records
are the ``ObjectResult``s a ``Decision`` carries.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.condition.composer import geometry, region_of
from edge.condition.image import ConditionedImage
from edge.config.localise import LocaliseConfig
from edge.contracts import InputContract
from edge.records import LocalisedItem, ObjectPart, ObjectResult, Polygon, ScoredItem, ScoredObject
from edge.subparts import Region, box_polygon, mask_polygon, segment_parts

log = logging.getLogger(__name__)

__all__ = ["LocaliseStage", "LocalisedItem", "Polygon", "box_polygon", "localise_object", "map_over_region",
           "mask_polygon"]


def map_over_region(anomaly_map: NDArray[np.float32], region: Region,
                    contract: InputContract | None = None) -> NDArray[np.float32]:
    """The anomaly map as ``(y1 - y0, x1 - x0)`` float32 over the crop's item pixels.

    With the scorer's ``contract`` the map is first brought to the model-input size and cut to the resized
    content (letterbox padding dropped), so map and crop share one geometry. Without it (or for a stretched
    input) the whole map spans the crop.
    """
    x0, y0, x1, y1 = region
    size = (x1 - x0, y1 - y0)
    if contract is not None:
        g = geometry(region, contract)
        if (g.pad_x, g.pad_y, g.out_width, g.out_height) != (0, 0, contract.width, contract.height):
            full = cv2.resize(anomaly_map, (contract.width, contract.height), interpolation=cv2.INTER_LINEAR)
            anomaly_map = np.ascontiguousarray(full[g.pad_y:g.pad_y + g.out_height, g.pad_x:g.pad_x + g.out_width])
    return np.asarray(cv2.resize(anomaly_map, size, interpolation=cv2.INTER_LINEAR), dtype=np.float32)


def localise_object(obj: ScoredObject, object_id: int, image: ConditionedImage,
                    contract: InputContract | None = None, config: LocaliseConfig | None = None) -> ObjectResult:
    """Turn a scored object into the published ``ObjectResult`` with its polygon (and parts, if anomalous)."""
    config = config if config is not None else LocaliseConfig()
    box = obj.detection.box
    polygon = box_polygon(box)
    parts: tuple[ObjectPart, ...] = ()
    if obj.anomalous and obj.anomaly_map is not None and obj.threshold is not None:
        height, width = image.shape
        region = region_of(box, height, width)
        resized = map_over_region(obj.anomaly_map, region, contract)
        mask = (resized >= obj.threshold).astype(np.uint8)
        found = mask_polygon(mask, region[0], region[1]) if mask.any() else None
        polygon = found or polygon
        if config.subparts:
            try:
                parts = segment_parts(image, region, resized, obj.threshold, config)
            except Exception as exc:  # parts help the operator; they must never cost the object its verdict
                log.error("sub-component parts failed", extra={"object_id": object_id, "error": str(exc)})
    return ObjectResult(
        object_id=object_id,
        box=box,
        label=obj.detection.label,
        detector_score=obj.detection.score,
        anomaly_score=obj.score,
        threshold=obj.threshold,
        anomalous=obj.anomalous,
        polygon_xray=polygon,
        parts=parts,
        classifier_score=obj.classifier_score,
        classifier_threshold=obj.classifier_threshold,
        signals=obj.signals,
    )


class LocaliseStage:
    """Outlines the anomalous part of every object, and splits anomalous objects into scored parts."""

    def __init__(self, config: LocaliseConfig | None = None) -> None:
        self._config = config if config is not None else LocaliseConfig()

    def __call__(self, item: ScoredItem) -> LocalisedItem:
        scorer = item.models.scorer
        contract = scorer.bundle.contract if scorer is not None else None
        # Parts for the strongest alarms only: their cost grows with the number of anomalous objects.
        ranked = sorted((i for i, o in enumerate(item.objects) if o.anomalous),
                        key=lambda i: -(item.objects[i].score or 0.0))
        with_parts = set(ranked[:self._config.max_objects_with_parts])
        without = self._config.model_copy(update={"subparts": False})
        objects = tuple(localise_object(o, i, item.image, contract, self._config if i in with_parts else without)
                        for i, o in enumerate(item.objects))
        return LocalisedItem(item.meta, item.image, objects, item.models)
