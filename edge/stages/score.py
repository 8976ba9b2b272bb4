"""Score: every detected object's crop through the crop models, batched, and each object's alarm signals.

Crops are composed with each model's own input contract (the composer crops, resizes and normalises exactly as
in training) and run in batches of at most ``batch_size``. Two crop models may run: the ``models.classifier``
slot (supervised benign/threat: the threat kinds it was trained on) and the ``models.scorer`` slot (the
benign-only anomaly scorer, with a map; a classifier bundle there, as configs before issue 32 had it, still
works). Scores are already normalised by the bundles.

Each object also gets its ``signals``: one ``AlarmReason`` per signal evaluated, its score against its own
threshold: ``known:<class>`` when the detector labelled it a threat class (the detector score against the
class's threshold), ``classifier`` and ``anomaly`` (the bundle's operating-point threshold). The decide stage
turns the signals that reach their thresholds into the object's reasons; this stage only measures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from edge.bundles.outputs import ClassifierOutputs, Role, ScorerOutputs
from edge.condition.composer import compose
from edge.condition.image import ConditionedImage
from edge.errors import BackendError
from edge.records import AlarmReason, BoxXyxy, DetectedItem, Detection, ReasonKind, ScoredItem, ScoredObject
from edge.screening import LoadedModel, ModelHolder

__all__ = ["ScoreStage", "ScoredItem", "ScoredObject", "known_signal", "run_crop_model"]


def run_crop_model(model: LoadedModel, image: ConditionedImage, boxes: Sequence[BoxXyxy], batch: int
                   ) -> tuple[list[float], list[NDArray[np.float32] | None]]:
    """One score per box (the bundle's scale; a classifier's anomaly/threat probability) and its map or None.

    Raises:
        BackendError: the bundle returned something else than scores, or a non-finite score.
    """
    scores: list[float] = []
    maps: list[NDArray[np.float32] | None] = []
    for start in range(0, len(boxes), batch):
        crops = compose(image, model.bundle.contract, list(boxes[start:start + batch]))
        out = model.session.predict(crops)
        if isinstance(out, ScorerOutputs):
            scores.extend(float(s) for s in out.score)
            maps.extend(np.asarray(m[0], dtype=np.float32) for m in out.anomaly_map)
        elif isinstance(out, ClassifierOutputs):
            classes = model.bundle.manifest.classes
            column = classes.index("anomaly") if "anomaly" in classes else out.probs.shape[1] - 1
            anomaly = out.probs[:, column]
            scores.extend(float(s) for s in anomaly)
            maps.extend([None] * len(anomaly))
        else:
            raise BackendError(f"bundle {model.bundle.manifest.name} returned {type(out).__name__}")
    if not all(np.isfinite(scores)):
        raise BackendError(f"bundle {model.bundle.manifest.name} returned a non-finite score")
    return scores, maps


def known_signal(detection: Detection, threat_classes: Mapping[str, float]) -> AlarmReason | None:
    """The detector's own signal for a detection of a threat class (None for other classes)."""
    if detection.label is None or detection.label not in threat_classes:
        return None
    threshold = float(threat_classes[detection.label])
    return AlarmReason(ReasonKind.KNOWN, detection.label, float(detection.score), threshold)


def _kind(model: LoadedModel) -> ReasonKind:
    return ReasonKind.CLASSIFIER if model.bundle.role is Role.CLASSIFIER else ReasonKind.ANOMALY


class ScoreStage:
    """Runs the item's classifier and scorer on its object crops and lists every object's alarm signals."""

    def __init__(self, models: ModelHolder, batch_size: int = 8) -> None:
        self._models = models
        self._batch = batch_size

    def __call__(self, item: DetectedItem) -> ScoredItem:
        models = item.models
        detections = item.detections
        boxes = [d.box for d in detections]
        n = len(detections)
        scorer, classifier = models.scorer, models.classifier
        s_scores: list[float | None] = [None] * n
        s_maps: list[NDArray[np.float32] | None] = [None] * n
        c_scores: list[float | None] = [None] * n
        if n and scorer is not None:
            got, s_maps = run_crop_model(scorer, item.image, boxes, self._batch)
            s_scores = list(got)
        if n and classifier is not None:
            c_scores = list(run_crop_model(classifier, item.image, boxes, self._batch)[0])
        s_thr = scorer.threshold if scorer is not None else None
        c_thr = classifier.threshold if classifier is not None else None
        objects = []
        for k, d in enumerate(detections):
            signals: list[AlarmReason] = []
            known = known_signal(d, models.threat_classes)
            if known is not None:
                signals.append(known)
            c, s = c_scores[k], s_scores[k]
            if classifier is not None and c is not None and c_thr is not None:
                signals.append(AlarmReason(ReasonKind.CLASSIFIER, None, c, c_thr))
            if scorer is not None and s is not None and s_thr is not None:
                signals.append(AlarmReason(_kind(scorer), None, s, s_thr))
            objects.append(ScoredObject(d, s, s_thr if s is not None else None, s_maps[k], c,
                                        c_thr if c is not None else None, tuple(signals)))
        return ScoredItem(item.meta, item.image, tuple(objects), models)
