"""Score: every detected object's crop through the scorer bundle, batched → a score and an anomaly map.

Crops are composed with the scorer's own input contract (the composer crops, resizes and normalises exactly as
in training) and run in batches of at most ``batch_size``. Scores are already normalised by the bundle; an
object is anomalous iff ``score >= threshold`` (the bundle's threshold, set on benign validation data).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edge.bundles.outputs import ClassifierOutputs, ScorerOutputs
from edge.condition.composer import compose
from edge.errors import BackendError
from edge.records import DetectedItem, ScoredItem, ScoredObject
from edge.screening import ModelHolder

__all__ = ["ScoreStage", "ScoredItem", "ScoredObject"]


class ScoreStage:
    """Runs the scorer (or benign/anomaly classifier) of the item's model set on its object crops."""

    def __init__(self, models: ModelHolder, batch_size: int = 8) -> None:
        self._models = models
        self._batch = batch_size

    def __call__(self, item: DetectedItem) -> ScoredItem:
        scorer = item.models.scorer
        if scorer is None or not item.detections:
            objects = tuple(ScoredObject(d, None, None, None) for d in item.detections)
            return ScoredItem(item.meta, item.image, objects, item.models)
        threshold = scorer.threshold
        boxes = [d.box for d in item.detections]
        scores: list[float] = []
        maps: list[NDArray[np.float32] | None] = []
        for start in range(0, len(boxes), self._batch):
            batch = compose(item.image, scorer.bundle.contract, boxes[start:start + self._batch])
            out = scorer.session.predict(batch)
            if isinstance(out, ScorerOutputs):
                scores.extend(float(s) for s in out.score)
                maps.extend(np.asarray(m[0], dtype=np.float32) for m in out.anomaly_map)
            elif isinstance(out, ClassifierOutputs):
                classes = scorer.bundle.manifest.classes
                column = classes.index("anomaly") if "anomaly" in classes else out.probs.shape[1] - 1
                anomaly = out.probs[:, column]
                scores.extend(float(s) for s in anomaly)
                maps.extend([None] * len(anomaly))
            else:
                raise BackendError(f"bundle {scorer.bundle.manifest.name} returned {type(out).__name__}")
        if not all(np.isfinite(scores)):
            raise BackendError(f"bundle {scorer.bundle.manifest.name} returned a non-finite score")
        objects = tuple(ScoredObject(d, s, threshold, m)
                        for d, s, m in zip(item.detections, scores, maps, strict=True))
        return ScoredItem(item.meta, item.image, objects, item.models)
