"""Typed model outputs per bundle role: the one place that names what a model of each role returns.

Sits between the inference backends (which return raw arrays by graph output name) and the pipeline stages
(which read these records). ``export/`` names ONNX outputs after these records' fields, so a bundle's graph
outputs and the runtime's expectations cannot drift apart. Shapes are documented here and in
``docs/bundles.md``; this module does no inference and never imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from enum import StrEnum

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


class Role(StrEnum):
    """What a bundle's model does in the pipeline."""

    DETECTOR = "detector"
    SCORER = "scorer"
    CLASSIFIER = "classifier"
    SEGMENTER = "segmenter"


def _freeze(*arrays: np.ndarray | None) -> None:
    for a in arrays:
        if a is not None:
            a.setflags(write=False)


@dataclass(frozen=True, slots=True)
class DetectorOutputs:
    """Dense candidate boxes; the pipeline thresholds with the bundle's ``score`` threshold and runs NMS.

    Attributes:
        boxes: (N, K, 4) float32, ``x1, y1, x2, y2`` in pixels of the model input (contract height x width).
        scores: (N, K) float32 in [0, 1], objectness or class confidence per candidate.
        labels: (N, K) int64 index into the bundle's ``classes``; None for a class-agnostic detector.
    """

    boxes: FloatArray
    scores: FloatArray
    labels: IntArray | None = None

    def __post_init__(self) -> None:
        n, k = self.scores.shape
        if self.boxes.shape != (n, k, 4):
            raise ValueError(f"boxes shape {self.boxes.shape} does not match scores {self.scores.shape}")
        if self.labels is not None and self.labels.shape != (n, k):
            raise ValueError(f"labels shape {self.labels.shape} does not match scores {self.scores.shape}")
        _freeze(self.boxes, self.scores, self.labels)


@dataclass(frozen=True, slots=True)
class ScorerOutputs:
    """Anomaly evidence for each input crop, already normalised by the bundle's score normalisation.

    Attributes:
        anomaly_map: (N, 1, h, w) float32; h, w may be smaller than the input (resize it to the crop).
        score: (N,) float32; anomalous iff ``score >= threshold`` (the bundle's ``score`` threshold).
    """

    anomaly_map: FloatArray
    score: FloatArray

    def __post_init__(self) -> None:
        n = self.score.shape[0]
        if self.score.ndim != 1 or self.anomaly_map.ndim != 4 or self.anomaly_map.shape[:2] != (n, 1):
            raise ValueError(f"anomaly_map {self.anomaly_map.shape} / score {self.score.shape} are not (N,1,h,w)/(N,)")
        _freeze(self.anomaly_map, self.score)


@dataclass(frozen=True, slots=True)
class ClassifierOutputs:
    """Class probabilities per input.

    Attributes:
        probs: (N, C) float32, rows sum to 1, C = len(classes). The decision is the argmax.
    """

    probs: FloatArray

    def __post_init__(self) -> None:
        if self.probs.ndim != 2:
            raise ValueError(f"probs must be (N, C), got {self.probs.shape}")
        _freeze(self.probs)


@dataclass(frozen=True, slots=True)
class SegmenterOutputs:
    """Per-pixel class probabilities.

    Attributes:
        masks: (N, C, h, w) float32 in [0, 1]; the per-pixel decision is the argmax over C.
    """

    masks: FloatArray

    def __post_init__(self) -> None:
        if self.masks.ndim != 4:
            raise ValueError(f"masks must be (N, C, h, w), got {self.masks.shape}")
        _freeze(self.masks)


RoleOutputs = DetectorOutputs | ScorerOutputs | ClassifierOutputs | SegmenterOutputs

OUTPUT_RECORDS: dict[Role, type[DetectorOutputs | ScorerOutputs | ClassifierOutputs | SegmenterOutputs]] = {
    Role.DETECTOR: DetectorOutputs,
    Role.SCORER: ScorerOutputs,
    Role.CLASSIFIER: ClassifierOutputs,
    Role.SEGMENTER: SegmenterOutputs,
}


def required_fields(role: Role) -> tuple[str, ...]:
    """Output fields a model of ``role`` must provide, in graph output order."""
    return tuple(f.name for f in fields(OUTPUT_RECORDS[role]) if f.default is not None)


def optional_fields(role: Role) -> tuple[str, ...]:
    """Output fields a model of ``role`` may provide."""
    return tuple(f.name for f in fields(OUTPUT_RECORDS[role]) if f.default is None)


DECISION_THRESHOLD_KEY = "score"
"""Key in a manifest's ``thresholds`` for the decision threshold of detectors and scorers."""

NMS_IOU_KEY = "nms_iou"
"""Key in a detector manifest's ``thresholds``: the IoU above which NMS suppresses a lower-scored box (0.5 when
absent)."""

VOTE_IOU_KEY = "vote_iou"
"""Key in a detector manifest's ``thresholds``: box voting after NMS (``edge.stages.detect.vote``), each kept box
refined by the candidates overlapping it at IoU >= this; absent or 0 = off."""

THRESHOLD_KEYS: dict[Role, tuple[str, ...]] = {
    Role.DETECTOR: (DECISION_THRESHOLD_KEY, NMS_IOU_KEY, VOTE_IOU_KEY),
    Role.SCORER: (DECISION_THRESHOLD_KEY, "item"),
    Role.CLASSIFIER: (DECISION_THRESHOLD_KEY, "item"),
    Role.SEGMENTER: (),
}
"""The ``thresholds`` keys the runtime reads, per role (what ``edge-export set-thresholds`` accepts)."""

ITEM_THRESHOLD_KEY = "item"
"""Key in a scorer manifest's ``thresholds`` for the item operating point: the object score at which the max rule
tags 95% of benign *items* benign, measured through the whole pipeline (detector boxes, not ground truth). An item
carries several objects, so this sits above the object threshold (``score``), which tags 95% of benign *objects*
benign; used by the service when ``models.operating_point`` is ``item`` (the default)."""


_ITEM_NOTE = re.compile(r"^\[item threshold [^\]]*; detector (?P<detector>[^\s\]]+)\] ")
"""The notes prefix bundles carried before bundle.yaml's ``item_detector`` key: read only as a fallback, for
bundles made before it (``BundleManifest.item_threshold_detector``)."""


def item_threshold_note(threshold: float, how: str, detector: str) -> str:
    """The notes prefix that says, for people, where a bundle's ``thresholds.item`` came from; ``detector`` is
    the ``name@version`` it was measured through. The service reads the structured ``item_detector`` key; this
    text is its fallback only for bundles made before that key (:func:`item_threshold_detector`)."""
    return f"[item threshold {threshold:.6g}: {how}; detector {detector}] "


def item_threshold_detector(notes: str) -> str | None:
    """The ``name@version`` of the detector a bundle's item threshold was measured through, if its notes say
    (the fallback for bundles without ``item_detector``; use ``BundleManifest.item_threshold_detector``)."""
    m = _ITEM_NOTE.match(notes)
    return m.group("detector") if m else None


def without_item_threshold_note(notes: str) -> str:
    """``notes`` without a leading item-threshold prefix (a new measurement replaces the old one)."""
    return _ITEM_NOTE.sub("", notes, count=1)


def after_item_threshold_note(notes: str, text: str) -> str:
    """``text`` put first in ``notes`` but after an item-threshold prefix, which must stay first (the service
    reads from it the detector the item threshold was measured through)."""
    rest = without_item_threshold_note(notes)
    return notes[:len(notes) - len(rest)] + text + rest
