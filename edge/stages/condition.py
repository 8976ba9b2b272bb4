"""Condition: raw counts → ``ConditionedImage`` (flat-field, effective Z, pseudo-colour), or a degraded image.

Missing calibrations do not stop the service: every dual-energy item then fails here with
``missing_calibration`` (UNSCREENED), and the status says why. Degraded sources (pseudo-colour or grey images)
need no calibration; the composer later refuses a bundle whose channels such an image cannot provide.

Before an item is conditioned further, the image-quality gate (``edge.condition.quality``) judges whether it holds
real X-ray data (raw counts and flat-fielded transmissions, or the degraded image); a finding raises ``ItemFailed``
with ``no_xray``, ``saturated``, ``lines_missing`` or ``dead_columns``, so the item is UNSCREENED, never CLEAR.

The raw counts stop here: the ``ConditionedItem`` carries the conditioned image only (the audit store keeps the
inputs it is asked to keep when the pipeline accepts the item, ``edge.sinks.audit.AuditStore.keep_inputs``).
"""

from __future__ import annotations

import numpy as np

from edge.condition.conditioner import Conditioner
from edge.condition.degraded import from_grey, from_pseudo_colour
from edge.condition.image import ConditionedImage
from edge.condition.quality import QualityFinding, QualityGate
from edge.config.condition import QualityConfig
from edge.errors import CalibrationError, FrameError, ItemFailed
from edge.records import ConditionedItem, RawItem

__all__ = ["ConditionStage", "ConditionedItem", "degraded_image"]


def degraded_image(image: np.ndarray) -> ConditionedImage:
    """Wrap a pseudo-colour RGB (H, W, 3) or grey (H, W) image from a degraded source (the same functions
    the training and evaluation code use, so a model sees these images prepared one way only)."""
    if image.ndim == 3 and image.shape[2] == 3:
        return from_pseudo_colour(np.ascontiguousarray(image))
    if image.ndim == 2:
        return from_grey(image)
    raise FrameError(f"expected an (H, W, 3) colour or (H, W) grey image, got shape {image.shape}")


def _fail(finding: QualityFinding | None) -> None:
    if finding is not None:
        raise ItemFailed(finding.reason, f"image quality: {finding.detail}")


class ConditionStage:
    """The condition stage; ``conditioner`` is None when the calibrations could not be loaded.

    ``quality`` configures the image-quality gate (``condition.quality``; its defaults when None).
    """

    def __init__(self, conditioner: Conditioner | None, missing_reason: str = "",
                 quality: QualityConfig | None = None) -> None:
        self._conditioner = conditioner
        self._missing = missing_reason or "flat-field or energy calibration not loaded"
        self._gate = QualityGate(quality or QualityConfig())

    def __call__(self, item: RawItem) -> ConditionedItem:
        if item.image is not None:
            _fail(self._gate.inspect_image(item.image))
            return ConditionedItem(item.meta, degraded_image(item.image))
        if item.high is None or item.low is None:
            raise FrameError("item has neither raw high/low frames nor an image")
        if self._conditioner is None:
            raise CalibrationError(self._missing)
        low, high = item.low, item.high
        if low.shape != high.shape or low.ndim != 2:
            raise FrameError(f"low/high raw frames must be equal (H, W), got {low.shape} and {high.shape}")
        # Flat-field once, judge, then hand the same transmissions on (the conditioner takes ownership).
        t_low = self._conditioner.corrector.apply(low, 0)
        t_high = self._conditioner.corrector.apply(high, 1)
        _fail(self._gate.inspect_dual(low, high, t_low, t_high, self._conditioner.corrector.flatfield.dead))
        return ConditionedItem(item.meta, self._conditioner.from_transmission(t_low, t_high))
