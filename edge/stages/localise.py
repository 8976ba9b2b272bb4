"""Localise: where inside each object the anomaly is, as a polygon in item pixels.

The scorer's anomaly map (over the crop) is resized to the crop's size in the item, thresholded at the
object's threshold (maps and scores share one normalisation in our bundles and in anomalib's), and the largest
region becomes the polygon. An anomalous object whose map has no pixel above threshold is outlined whole;
benign objects are outlined by their box. The result records are the ``ObjectResult``s a ``Decision`` carries.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from edge.condition.composer import region_of
from edge.condition.image import ConditionedImage
from edge.records import BoxXyxy, ItemMeta, ObjectResult, RawItem
from edge.screening import ModelSet
from edge.stages.score import ScoredItem, ScoredObject

Polygon = tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True, eq=False)
class LocalisedItem:
    """An item whose objects are judged and outlined; ready for the decision and the camera mapping."""

    meta: ItemMeta
    image: ConditionedImage
    raw: RawItem
    objects: tuple[ObjectResult, ...]
    models: ModelSet


def box_polygon(box: BoxXyxy) -> Polygon:
    """The box as a closed-order polygon (clockwise in image coordinates)."""
    return ((box.x1, box.y1), (box.x2, box.y1), (box.x2, box.y2), (box.x1, box.y2))


def mask_polygon(mask: NDArray[np.uint8], x0: int, y0: int, max_points: int = 64) -> Polygon | None:
    """Outline of the largest connected region of ``mask`` (offset by x0, y0), simplified to few points."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    largest = max(contours, key=cv2.contourArea)
    epsilon = 0.5
    approx = largest
    while len(approx) > max_points:
        epsilon *= 2
        approx = cv2.approxPolyDP(largest, epsilon, True)
    points = approx.reshape(-1, 2).astype(np.float64)
    if len(points) < 3:
        x, y, w, h = cv2.boundingRect(largest)
        return box_polygon(BoxXyxy(x + x0, y + y0, x + x0 + w, y + y0 + h))
    return tuple((float(px + x0), float(py + y0)) for px, py in points)


def localise_object(obj: ScoredObject, object_id: int, height: int, width: int) -> ObjectResult:
    """Turn a scored object into the published ``ObjectResult`` with its polygon."""
    box = obj.detection.box
    polygon = box_polygon(box)
    if obj.anomalous and obj.anomaly_map is not None and obj.threshold is not None:
        x0, y0, x1, y1 = region_of(box, height, width)
        resized = cv2.resize(obj.anomaly_map, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        mask = (resized >= obj.threshold).astype(np.uint8)
        found = mask_polygon(mask, x0, y0) if mask.any() else None
        polygon = found or polygon
    return ObjectResult(
        object_id=object_id,
        box=box,
        label=obj.detection.label,
        detector_score=obj.detection.score,
        anomaly_score=obj.score,
        threshold=obj.threshold,
        anomalous=obj.anomalous,
        polygon_xray=polygon,
    )


class LocaliseStage:
    """Outlines the anomalous part of every object."""

    def __call__(self, item: ScoredItem) -> LocalisedItem:
        height, width = item.image.shape
        objects = tuple(localise_object(o, i, height, width) for i, o in enumerate(item.objects))
        return LocalisedItem(item.meta, item.image, item.raw, objects, item.models)
