"""Typed output adapters: raw backend outputs (by graph name) → the role's output record.

The adapter is where a bundle's declared output names, harmless shape variants ((N, 1) vs (N,) scores, maps
without a channel axis: both occur in anomalib exports) and its score normalisation are applied, so the
pipeline stages only ever see :mod:`edge.bundles.outputs` records. A missing output or an impossible shape
raises :class:`~edge.errors.BackendError` (the item becomes UNSCREENED, model_error). The backends return freshly
allocated arrays (``InferenceSession.run``), so outputs already of the record's dtype are taken as they are, not
copied a second time; the records mark them read-only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edge.bundles.manifest import BundleManifest
from edge.bundles.outputs import (
    ClassifierOutputs,
    DetectorOutputs,
    Role,
    RoleOutputs,
    ScorerOutputs,
    SegmenterOutputs,
)
from edge.errors import BackendError


def _get(manifest: BundleManifest, raw: Mapping[str, np.ndarray], role_field: str) -> np.ndarray:
    name = manifest.output_name(role_field)
    if name is None or name not in raw:
        raise BackendError(f"bundle {manifest.name}: model output for {role_field!r} (graph name {name!r}) "
                           f"is missing; the model returned {sorted(raw)}")
    return np.asarray(raw[name])


def _optional(manifest: BundleManifest, raw: Mapping[str, np.ndarray], role_field: str) -> np.ndarray | None:
    name = manifest.output_name(role_field)
    return None if name is None else _get(manifest, raw, role_field)


def adapt_detector(manifest: BundleManifest, raw: Mapping[str, np.ndarray]) -> DetectorOutputs:
    """boxes (N, K, 4), scores (N, K) or (N, K, 1), optional labels (N, K)."""
    boxes = _get(manifest, raw, "boxes").astype(np.float32, copy=False)
    scores = _get(manifest, raw, "scores").astype(np.float32, copy=False)
    if scores.ndim == 3 and scores.shape[-1] == 1:
        scores = scores[..., 0]
    labels = _optional(manifest, raw, "labels")
    try:
        return DetectorOutputs(boxes=boxes, scores=scores,
                               labels=None if labels is None else labels.astype(np.int64, copy=False))
    except ValueError as exc:
        raise BackendError(f"bundle {manifest.name}: detector outputs have unexpected shapes: {exc}") from exc


def adapt_scorer(manifest: BundleManifest, raw: Mapping[str, np.ndarray]) -> ScorerOutputs:
    """score (N,) or (N, 1); anomaly_map (N, 1, h, w) or (N, h, w); normalisation applied to both."""
    score = _get(manifest, raw, "score").astype(np.float32, copy=False)
    amap = _get(manifest, raw, "anomaly_map").astype(np.float32, copy=False)
    n = amap.shape[0] if amap.ndim else 0
    if score.size != n:
        raise BackendError(f"bundle {manifest.name}: {score.size} scores for {n} anomaly maps")
    if amap.ndim == 3:
        amap = amap[:, None]
    norm = manifest.normalisation
    try:
        return ScorerOutputs(anomaly_map=norm.apply(amap), score=norm.apply(score.reshape(n)))
    except ValueError as exc:
        raise BackendError(f"bundle {manifest.name}: scorer outputs have unexpected shapes: {exc}") from exc


def adapt_classifier(manifest: BundleManifest, raw: Mapping[str, np.ndarray]) -> ClassifierOutputs:
    """probs (N, C) with C = number of the bundle's classes."""
    probs = _get(manifest, raw, "probs").astype(np.float32, copy=False)
    if probs.ndim != 2 or (manifest.classes and probs.shape[1] != len(manifest.classes)):
        raise BackendError(f"bundle {manifest.name}: probs shape {probs.shape} does not match "
                           f"{len(manifest.classes)} classes")
    return ClassifierOutputs(probs=probs)


def adapt_segmenter(manifest: BundleManifest, raw: Mapping[str, np.ndarray]) -> SegmenterOutputs:
    """masks (N, C, h, w)."""
    masks = _get(manifest, raw, "masks").astype(np.float32, copy=False)
    if masks.ndim != 4 or (manifest.classes and masks.shape[1] != len(manifest.classes)):
        raise BackendError(f"bundle {manifest.name}: masks shape {masks.shape} does not match "
                           f"(N, {len(manifest.classes)}, h, w)")
    return SegmenterOutputs(masks=masks)


def adapt(manifest: BundleManifest, raw: Mapping[str, np.ndarray]) -> RoleOutputs:
    """Dispatch on the bundle's role."""
    if manifest.role is Role.DETECTOR:
        return adapt_detector(manifest, raw)
    if manifest.role is Role.SCORER:
        return adapt_scorer(manifest, raw)
    if manifest.role is Role.CLASSIFIER:
        return adapt_classifier(manifest, raw)
    return adapt_segmenter(manifest, raw)
