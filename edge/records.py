"""Records that cross stage boundaries and leave the box: frozen, typed, no dicts.

The pipeline's order is known only to ``edge.pipeline``; these are the shapes it passes. The screening chain's
own records (``ConditionedItem`` → ``DetectedItem`` → ``ScoredItem`` → ``LocalisedItem`` → ``DecidedItem``) live
here too, so that a stage imports records, never another stage. The raw counts (``RawItem``) stop at the
condition stage: nothing after it reads them. Records that leave
the box (``Decision`` and its ``ObjectResult``s) are what the MQTT payloads, the audit store and the DICOS TDR
are built from. Times: ``*_wall`` is UNIX time in seconds (for people and other systems), ``*_mono`` is
``time.monotonic()`` seconds (for deadlines and latencies on this box only).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # annotations only: both import this module, so a runtime import would be a cycle
    from edge.condition.image import ConditionedImage
    from edge.screening import ModelSet


class Verdict(StrEnum):
    """Per-item decision. UNSCREENED is an alarm for manual inspection: the box never clears what it did not see."""

    ALARM = "alarm"
    CLEAR = "clear"
    UNSCREENED = "unscreened"

    @property
    def needs_operator(self) -> bool:
        """ALARM and UNSCREENED both go to the alarms topic."""
        return self is not Verdict.CLEAR


class UnscreenedReason(StrEnum):
    """Why an item could not be screened. Stable strings: subscribers switch on them."""

    CORRUPT_FRAME = "corrupt_frame"
    MODEL_ERROR = "model_error"
    MISSING_CALIBRATION = "missing_calibration"
    LINK_DOWN = "link_down"
    DEADLINE_MISSED = "deadline_missed"
    OVERLOAD = "overload"
    SOURCE_STALLED = "source_stalled"
    SHUTDOWN = "shutdown"
    INTERNAL_ERROR = "internal_error"
    RESTART = "restart"
    """Accepted before a crash or kill and not decided then: decided at the next start, never screened twice."""
    OVERSIZE = "oversize"
    """The source's item declares more lines, channels or bytes than the configured maxima (nothing allocated)."""
    NO_XRAY = "no_xray"
    """The frames hold no X-ray: dark level or zeros (tube off, shutter closed, cable)."""
    SATURATED = "saturated"
    """Too much of the image sits at the detector's full scale: nothing behind it can be seen."""
    LINES_MISSING = "lines_missing"
    """Too many belt lines are missing (zeroed or dark rows): part of the item was never imaged."""
    DEAD_COLUMNS = "dead_columns"
    """Too many detector channels are dead (dark along the whole item): a strip of the belt was never imaged."""


@dataclass(frozen=True, slots=True)
class BoxXyxy:
    """Axis-aligned box in X-ray pixels: columns x (detector channels), rows y (belt lines); x2/y2 exclusive."""

    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        if not (self.x2 >= self.x1 and self.y2 >= self.y1):
            raise ValueError(f"box corners out of order: {self}")


@dataclass(frozen=True, slots=True)
class ObjectPart:
    """One sub-component of an anomalous object (a SLIC superpixel of its material), judged by the anomaly map.

    ``score`` is on the bundle's normalised scale, so ``anomalous`` is ``score >= `` the object's threshold (or the
    part holds the map's maximum when no part reaches it: an anomalous object always shows where it alarmed).
    ``polygon_xray`` is the part's outline in (x, y) X-ray pixels; ``polygon_camera`` the same on the exit-camera
    frame when mapped, else None.
    """

    polygon_xray: tuple[tuple[float, float], ...]
    score: float
    anomalous: bool
    polygon_camera: tuple[tuple[float, float], ...] | None = None


class ReasonKind(StrEnum):
    """Which signal raised an alarm (contract 2 of issue 32). Stable strings: subscribers switch on them."""

    KNOWN = "known"
    """A detector class listed as a threat class reached its threshold (the class is the reason's label)."""
    CLASSIFIER = "classifier"
    """The supervised benign/threat classifier reached its threshold: a threat kind it was trained on."""
    ANOMALY = "anomaly"
    """The benign-only anomaly scorer reached its threshold: unlike any benign object it learned."""


@dataclass(frozen=True, slots=True)
class AlarmReason:
    """One signal evaluated on one object: its score against its own threshold.

    An object's ``signals`` hold every signal the models gave it; those with ``reached`` are its ``reasons``,
    and an item alarms iff one of its objects has a reason. ``label`` is the detector class for ``known``, None
    otherwise. ``code`` (``known:<label>``, ``classifier``, ``anomaly``) is what item payloads list.
    """

    kind: ReasonKind
    label: str | None
    score: float
    threshold: float

    @property
    def code(self) -> str:
        return f"{self.kind.value}:{self.label}" if self.kind is ReasonKind.KNOWN else self.kind.value

    @property
    def reached(self) -> bool:
        """The score is at or above the threshold: this signal alarms."""
        return self.score >= self.threshold


@dataclass(frozen=True, slots=True)
class ObjectResult:
    """One detected object and how it was judged.

    ``anomaly_score`` is the bundle-normalised score (threshold applied by the scorer bundle); ``anomalous`` is
    ``anomaly_score >= threshold``. ``polygon_xray`` outlines the anomalous region (or the object when no map),
    as (x, y) X-ray pixels; ``polygon_camera`` is the same mapped onto the exit-camera frame when available.
    ``parts`` splits an anomalous object with an anomaly map into scored sub-components (empty otherwise).
    ``anomaly_score``/``threshold`` are the ``models.scorer`` slot's; ``classifier_score``/
    ``classifier_threshold`` the ``models.classifier`` slot's. ``signals`` are every signal evaluated on the object
    (known threat class, classifier, anomaly) and ``reasons`` those that reached their thresholds; the decide stage
    sets ``reasons`` and then ``anomalous`` = the object raises the alarm (any reason).
    """

    object_id: int
    box: BoxXyxy
    label: str | None
    detector_score: float
    anomaly_score: float | None
    threshold: float | None
    anomalous: bool
    polygon_xray: tuple[tuple[float, float], ...] = ()
    polygon_camera: tuple[tuple[float, float], ...] | None = None
    parts: tuple[ObjectPart, ...] = ()
    reasons: tuple[AlarmReason, ...] = ()
    classifier_score: float | None = None
    classifier_threshold: float | None = None
    signals: tuple[AlarmReason, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Which bundle produced a result: enough to reproduce it."""

    role: str
    name: str
    version: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Decision:
    """Exactly one per item. ``reason`` is set iff the verdict is UNSCREENED; ``detail`` says more for people."""

    item_id: str
    scanner_id: str
    verdict: Verdict
    reason: UnscreenedReason | None
    detail: str
    objects: tuple[ObjectResult, ...]
    item_score: float | None
    scan_start_wall: float
    scan_end_wall: float
    decided_wall: float
    latency_ms: float
    encoder_start: int | None = None
    encoder_end: int | None = None
    models: tuple[ModelRef, ...] = ()
    overlay_jpeg: bytes | None = field(default=None, repr=False)
    overlay_note: str | None = None
    item_uid: str = ""
    """The item's ``ItemMeta.uid``: unique across restarts and boxes; record ids are made from it."""

    def __post_init__(self) -> None:
        if (self.verdict is Verdict.UNSCREENED) != (self.reason is not None):
            raise ValueError(f"{self.item_id}: reason must be set iff verdict is UNSCREENED")

    @property
    def reason_codes(self) -> tuple[str, ...]:
        """Why the item alarmed: its objects' reason codes, sorted and unique (empty unless ALARM)."""
        return tuple(sorted({r.code for o in self.objects for r in o.reasons}))


@dataclass(frozen=True, slots=True)
class ItemMeta:
    """Identity and timing of one scanned item, fixed when the source hands it over.

    ``item_id`` names the item for people (``<scanner_id>-<scan start ms>-<seq>``, or the source's file name); it
    can repeat (a firmware counter restarting after a power cycle, a file dropped twice). ``uid`` cannot: it is
    drawn once when the item is accepted (a UUID4, kept in the intake journal across restarts) and goes into every
    record id, so a subscriber drops true redeliveries but never a new item that reuses an old name.
    ``deadline_mono`` is when the item reaches the diverter: past it, only UNSCREENED is useful.
    """

    item_id: str
    scanner_id: str
    seq: int
    scan_start_wall: float
    scan_end_wall: float
    scan_start_mono: float
    scan_end_mono: float
    deadline_mono: float
    encoder_start: int | None = None
    encoder_end: int | None = None
    uid: str = ""

    def __post_init__(self) -> None:
        if not self.uid:
            object.__setattr__(self, "uid", uuid.uuid4().hex)


@dataclass(frozen=True, slots=True, eq=False)
class RawItem:
    """What a frame source delivers: the raw images of one item, or why they are unusable.

    Dual-energy sources fill ``high``/``low``: (H, W) uint16 raw counts, rows = belt lines, columns = detector
    channels. Degraded sources fill ``image`` instead: (H, W, 3) uint8 RGB pseudo-colour or (H, W) uint8 grey.
    ``problem`` is set when the source saw the item but could not read it (truncated file, bad shape): the item
    still flows so that it gets its UNSCREENED decision. The source keeps the item (its file stays where it is)
    until the pipeline calls ``acknowledge(source_ref)``, after the decision is durably stored.
    """

    meta: ItemMeta
    high: np.ndarray | None = None
    low: np.ndarray | None = None
    image: np.ndarray | None = None
    problem: str | None = None
    truth: object | None = None
    problem_reason: UnscreenedReason | None = None
    """Why a ``problem`` item is UNSCREENED (e.g. ``oversize``); None means ``corrupt_frame``."""
    source_ref: str | None = None
    """What the source needs to acknowledge the item once its decision is stored (e.g. the spool file's path);
    None for sources that keep nothing to acknowledge (the virtual scanner)."""

    def __post_init__(self) -> None:
        for name in ("high", "low", "image"):
            array = getattr(self, name)
            if array is not None:
                array.setflags(write=False)
        if self.problem is None:
            if self.high is None and self.image is None:
                raise ValueError(f"{self.meta.item_id}: an item needs high/low or an image, or a problem")
            if (self.high is None) != (self.low is None):
                raise ValueError(f"{self.meta.item_id}: high and low come together")
            if self.high is not None and self.low is not None and self.high.shape != self.low.shape:
                raise ValueError(f"{self.meta.item_id}: high {self.high.shape} and low {self.low.shape} differ")


# ---------------------------------------------------------------- the screening chain's records (edge.pipeline)

Polygon = tuple[tuple[float, float], ...]
"""An outline as (x, y) X-ray pixels."""


@dataclass(frozen=True, slots=True, eq=False)
class ConditionedItem:
    """An item after conditioning (condition → detect). The raw counts stay behind: no later stage reads them."""

    meta: ItemMeta
    image: ConditionedImage


@dataclass(frozen=True, slots=True)
class Detection:
    """One object found by the detector, in item pixels."""

    box: BoxXyxy
    score: float
    label: str | None


@dataclass(frozen=True, slots=True, eq=False)
class DetectedItem:
    """An item with its detections (detect → score); ``models`` is the set used, so later stages use the same."""

    meta: ItemMeta
    image: ConditionedImage
    detections: tuple[Detection, ...]
    models: ModelSet


@dataclass(frozen=True, slots=True, eq=False)
class ScoredObject:
    """A detection with its evidence; ``anomaly_map`` is (h, w) float32 over the crop, or None."""

    detection: Detection
    score: float | None
    threshold: float | None
    anomaly_map: NDArray[np.float32] | None
    classifier_score: float | None = None
    classifier_threshold: float | None = None
    signals: tuple[AlarmReason, ...] = ()
    """Every signal evaluated on the object (known threat class, classifier, anomaly), reached or not."""

    @property
    def anomalous(self) -> bool:
        """The ``models.scorer`` slot's score reaches its threshold (what the anomaly map is outlined at)."""
        return self.score is not None and self.threshold is not None and self.score >= self.threshold


@dataclass(frozen=True, slots=True, eq=False)
class ScoredItem:
    """An item whose objects have been scored (score → localise)."""

    meta: ItemMeta
    image: ConditionedImage
    objects: tuple[ScoredObject, ...]
    models: ModelSet


@dataclass(frozen=True, slots=True, eq=False)
class LocalisedItem:
    """An item whose objects are judged and outlined (localise → decide)."""

    meta: ItemMeta
    image: ConditionedImage
    objects: tuple[ObjectResult, ...]
    models: ModelSet


@dataclass(frozen=True, slots=True, eq=False)
class DecidedItem:
    """An item with its verdict (decide → map): ``decision`` has no picture and no camera outlines yet.

    ``image`` is kept for the overlay drawn on the X-ray when there is no camera frame.
    """

    meta: ItemMeta
    image: ConditionedImage
    decision: Decision
