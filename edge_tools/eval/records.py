"""Records of an evaluation: what a labelled item is, and what the pipeline decided about it.

Where it sits: shared by the dataset readers (``edge_tools.eval.datasets``), the offline runner
(``edge_tools.eval.runner``) and the metrics and reports. Every record here is small, frozen and picklable,
because items and outcomes travel between the worker processes and the main process. Must not: hold images
(workers read them from disk) or import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from edge.errors import EdgeError

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


@dataclass(frozen=True, slots=True)
class ObjectOutcome:
    """One object of a decision, reduced to what the metrics need (``Decision`` itself carries JPEG bytes)."""

    box: BoxTuple
    label: str | None
    detector_score: float
    anomaly_score: float | None
    threshold: float | None
    anomalous: bool


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
