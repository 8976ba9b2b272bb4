"""Records of an evaluation: what a labelled item is, and what the pipeline decided about it.

Where it sits: shared by the dataset readers (``edge_tools.eval.datasets``), the offline runner
(``edge_tools.eval.runner``) and the metrics and reports. Every record here is small, frozen and picklable,
because items and outcomes travel between the worker processes and the main process. Must not: hold images
(workers read them from disk) or import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from edge.errors import EdgeError
from edge.records import AlarmReason, ReasonKind

BoxTuple = tuple[float, float, float, float]
"""(x1, y1, x2, y2) in item pixels: x = detector channel (column), y = belt line (row); x2/y2 exclusive."""


class DatasetError(EdgeError):
    """A dataset's annotation file or folder layout cannot be read (one bad *image* never raises: see
    ``load_raw_item``)."""


class Modality(StrEnum):
    """How an item's pixels are stored: raw dual-energy counts, or one finished image (degraded modality)."""

    RAW = "raw"
    IMAGE = "image"


@dataclass(frozen=True, slots=True)
class TruthObject:
    """One annotated object. ``host_box`` is the box of the benign object a threat is concealed in (the sim's
    ``host_id``), so that an anomalous laptop counts as localising the part hidden inside it."""

    box: BoxTuple
    kind: str
    threat: bool
    group: str | None = None
    host_box: BoxTuple | None = None


@dataclass(frozen=True, slots=True)
class ItemTruth:
    """Ground truth of one item. ``threat`` is the item (bag) label; ``threat_kinds`` the threat kinds present,
    also those known only from an image-level label (no box)."""

    threat: bool
    objects: tuple[TruthObject, ...] = ()
    threat_kinds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DatasetItem:
    """One labelled item on disk. ``files`` is ``(low, high)`` for RAW, ``(image,)`` for IMAGE."""

    key: str
    modality: Modality
    files: tuple[Path, ...]
    truth: ItemTruth
    source: str = ""
    """Where the item's labels were read (annotation file, and line or image id): named in the errors of a bad
    label (``edge_tools.eval.datasets.check_labels``); empty when the item has no label file."""


@dataclass(frozen=True, slots=True)
class Dataset:
    """A labelled dataset as read: ``notes`` says what the reader assumed (e.g. "every box is a threat")."""

    name: str
    layout: str
    root: Path
    items: tuple[DatasetItem, ...]
    notes: tuple[str, ...] = ()

    def limited(self, n: int | None) -> Dataset:
        """The first ``n`` items (all when ``n`` is None)."""
        if n is None or n >= len(self.items):
            return self
        return Dataset(self.name, self.layout, self.root, self.items[:n],
                       (*self.notes, f"limited to the first {n} of {len(self.items)} items"))


def signal_ratio(signal: AlarmReason) -> float:
    """A signal's score over its own threshold: >= 1 exactly when the signal alarms (threshold > 0).

    Why a ratio: the signals live on different scales (a classifier probability, a normalised anomaly score, a
    detector score per class), each with its own threshold. Dividing by the threshold puts the decision boundary of
    every signal at 1, so "some signal's ratio >= t" means "some signal reaches t times its threshold": one knob
    that scales every threshold together, with t = 1 the service's decision. Above and below 1 the ranking across
    signals is a convention (how far past its threshold a signal is, in its own units), not a calibrated
    probability. A threshold of 0 or less has no ratio: the signal counts +inf when it alarms, -inf when not.
    """
    if signal.threshold > 0.0:
        return signal.score / signal.threshold
    return math.inf if signal.reached else -math.inf


def _signal_value(signal: AlarmReason, kind: ReasonKind | None) -> float | None:
    """The value a signal contributes to a per-item score: its ratio for the combined score (``kind`` None) and
    for ``known`` (classes have different thresholds), its raw score for the classifier and the anomaly scorer
    (one threshold each, so the ranking is the same and the 95%-benign threshold reads in the bundle's units)."""
    if kind is None:
        return signal_ratio(signal)
    if signal.kind is not kind:
        return None
    return signal_ratio(signal) if kind is ReasonKind.KNOWN else signal.score


@dataclass(frozen=True, slots=True)
class ObjectOutcome:
    """One object of a decision, reduced to what the metrics need (``Decision`` itself carries JPEG bytes).

    ``signals`` are every signal the service measured on the object (threat class, classifier, anomaly) and
    ``reasons`` the codes of those that alarmed (``known:<class>``, ``classifier``, ``anomaly``); ``anomalous``
    = the object raised the alarm (has a reason), as in the service's payload."""

    box: BoxTuple
    label: str | None
    detector_score: float
    anomaly_score: float | None
    threshold: float | None
    anomalous: bool
    signals: tuple[AlarmReason, ...] = ()
    reasons: tuple[str, ...] = ()
    classifier_score: float | None = None

    def signal_score(self, kind: ReasonKind | None = None) -> float | None:
        """The object's score for one signal kind (see ``_signal_value``), or for ``kind`` None its combined score:
        the highest ratio over its signals. None when the object has no such signal."""
        values = [v for s in self.signals if (v := _signal_value(s, kind)) is not None]
        return max(values) if values else None


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What the pipeline decided about one dataset item. ``verdict`` and ``reason`` are the ``Verdict`` and
    ``UnscreenedReason`` strings subscribers see."""

    key: str
    verdict: str
    reason: str | None
    detail: str
    objects: tuple[ObjectOutcome, ...]
    latency_ms: float
    reason_codes: tuple[str, ...] = ()
    """Why the item alarmed (the decision's reason codes, sorted, unique); empty unless ALARM."""

    @property
    def unscreened(self) -> bool:
        return self.verdict == "unscreened"

    @property
    def alarmed(self) -> bool:
        """ALARM or UNSCREENED: the fail-safe reading (an item the box could not screen goes to the operator)."""
        return self.verdict != "clear"

    def score_max(self) -> float | None:
        """Bag score for AUROC_M: the highest object anomaly score (None when no object was scored)."""
        scores = [o.anomaly_score for o in self.objects if o.anomaly_score is not None]
        return max(scores) if scores else None

    def score_mean(self) -> float | None:
        """Bag score for AUROC_A: the mean object anomaly score."""
        scores = [o.anomaly_score for o in self.objects if o.anomaly_score is not None]
        return sum(scores) / len(scores) if scores else None

    def signal_max(self, kind: ReasonKind | None = None) -> float | None:
        """Bag score of one signal kind (or, ``kind`` None, the combined score): the highest object score of it;
        None when no object has that signal. The combined score is >= 1 exactly when the item is ALARM."""
        scores = [v for o in self.objects if (v := o.signal_score(kind)) is not None]
        return max(scores) if scores else None

    def signal_mean(self, kind: ReasonKind | None = None) -> float | None:
        """The mean over the objects that have the signal (AUROC_A)."""
        scores = [v for o in self.objects if (v := o.signal_score(kind)) is not None]
        return sum(scores) / len(scores) if scores else None
