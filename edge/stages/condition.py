"""Condition: raw counts → ``ConditionedImage`` (flat-field, effective Z, pseudo-colour), or a degraded image.

Missing calibrations do not stop the service: every dual-energy item then fails here with
``missing_calibration`` (UNSCREENED), and the status says why. Degraded sources (pseudo-colour or grey images)
need no calibration; the composer later refuses a bundle whose channels such an image cannot provide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.condition.conditioner import Conditioner
from edge.condition.degraded import from_grey, from_pseudo_colour
from edge.condition.image import ConditionedImage
from edge.errors import CalibrationError, FrameError
from edge.records import ItemMeta, RawItem


@dataclass(frozen=True, slots=True, eq=False)
class ConditionedItem:
    """An item after conditioning; ``raw`` is kept for the audit store's optional inputs."""

    meta: ItemMeta
    image: ConditionedImage
    raw: RawItem


def degraded_image(image: np.ndarray) -> ConditionedImage:
    """Wrap a pseudo-colour RGB (H, W, 3) or grey (H, W) image from a degraded source (the same functions
    the training and evaluation code use, so a model sees these images prepared one way only)."""
    if image.ndim == 3 and image.shape[2] == 3:
        return from_pseudo_colour(np.ascontiguousarray(image))
    if image.ndim == 2:
        return from_grey(image)
    raise FrameError(f"expected an (H, W, 3) colour or (H, W) grey image, got shape {image.shape}")


class ConditionStage:
    """The condition stage; ``conditioner`` is None when the calibrations could not be loaded."""

    def __init__(self, conditioner: Conditioner | None, missing_reason: str = "") -> None:
        self._conditioner = conditioner
        self._missing = missing_reason or "flat-field or energy calibration not loaded"

    def __call__(self, item: RawItem) -> ConditionedItem:
        if item.image is not None:
            return ConditionedItem(item.meta, degraded_image(item.image), item)
        if item.high is None or item.low is None:
            raise FrameError("item has neither raw high/low frames nor an image")
        if self._conditioner is None:
            raise CalibrationError(self._missing)
        return ConditionedItem(item.meta, self._conditioner.condition(item.low, item.high), item)
