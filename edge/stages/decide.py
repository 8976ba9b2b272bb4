"""Decide: the per-item verdict from every signal of every object, and the UNSCREENED decision for failures.

One decision from every signal (issue 32): an object's reasons are its signals that reach their own thresholds
(a detection of a threat class at its class threshold: ``known:<class>``; the classifier: ``classifier``; the
anomaly scorer: ``anomaly``), and the item is ALARM iff some object has a reason (the max rule of seed 000 per
signal); CLEAR otherwise; UNSCREENED with a reason whenever screening did not happen in full. The item score
stays the highest ``models.scorer`` slot score (bag score for AUROC_M). This module is
the only place that builds ``Decision`` records, so the invariants live in one spot. The verdict is worked out
here once (``DecideStage``), before the map stage draws and maps it: the overlay and its caption read it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from edge.errors import BackendError, BundleError, CalibrationError, FrameError, ItemFailed, SourceError
from edge.records import (
    AlarmReason,
    DecidedItem,
    Decision,
    ItemMeta,
    LocalisedItem,
    ModelRef,
    ObjectResult,
    ReasonKind,
    UnscreenedReason,
    Verdict,
)


def reason_for(exc: BaseException) -> tuple[UnscreenedReason, str]:
    """Map an exception raised while screening to the reason subscribers see."""
    if isinstance(exc, ItemFailed):
        return exc.reason, exc.detail
    if isinstance(exc, FrameError):
        return UnscreenedReason.CORRUPT_FRAME, str(exc)
    if isinstance(exc, CalibrationError):
        return UnscreenedReason.MISSING_CALIBRATION, str(exc)
    if isinstance(exc, (BackendError, BundleError)):
        return UnscreenedReason.MODEL_ERROR, str(exc)
    if isinstance(exc, SourceError):
        return UnscreenedReason.SOURCE_STALLED, str(exc)
    return UnscreenedReason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"


def unscreened(meta: ItemMeta, reason: UnscreenedReason, detail: str, now_wall: float, now_mono: float,
               models: Sequence[ModelRef] = ()) -> Decision:
    """The fail-safe decision: the operator must look because the box could not."""
    return Decision(
        item_id=meta.item_id,
        scanner_id=meta.scanner_id,
        verdict=Verdict.UNSCREENED,
        reason=reason,
        detail=detail,
        objects=(),
        item_score=None,
        scan_start_wall=meta.scan_start_wall,
        scan_end_wall=meta.scan_end_wall,
        decided_wall=now_wall,
        latency_ms=max(0.0, (now_mono - meta.scan_end_mono) * 1000.0),
        encoder_start=meta.encoder_start,
        encoder_end=meta.encoder_end,
        models=tuple(models),
        item_uid=meta.uid,
    )


def object_signals(obj: ObjectResult) -> tuple[AlarmReason, ...]:
    """The signals evaluated on ``obj``; an object built without them (by a caller that predates issue 32) has
    its ``models.scorer`` slot score as its one signal, so it is judged as it always was."""
    if obj.signals:
        return obj.signals
    if obj.anomaly_score is not None and obj.threshold is not None:
        return (AlarmReason(ReasonKind.ANOMALY, None, obj.anomaly_score, obj.threshold),)
    return ()


def judged(obj: ObjectResult) -> ObjectResult:
    """``obj`` with its reasons (the signals that reach their thresholds) and ``anomalous`` = it has one."""
    reasons = tuple(s for s in object_signals(obj) if s.reached)
    return replace(obj, reasons=reasons, anomalous=bool(reasons))


def decide(meta: ItemMeta, objects: Sequence[ObjectResult], now_wall: float, now_mono: float,
           models: Sequence[ModelRef] = (), overlay_jpeg: bytes | None = None,
           overlay_note: str | None = None) -> Decision:
    """ALARM if any object has a reason (a signal at or above its threshold), else CLEAR; item score = max
    ``models.scorer`` slot score."""
    objects = [judged(o) for o in objects]
    scores = [o.anomaly_score for o in objects if o.anomaly_score is not None]
    alarming = [o for o in objects if o.reasons]
    verdict = Verdict.ALARM if alarming else Verdict.CLEAR
    codes = sorted({r.code for o in alarming for r in o.reasons})
    detail = (f"{len(alarming)} of {len(objects)} objects alarm: {', '.join(codes)}" if alarming
              else f"{len(objects)} objects, none alarms")
    return Decision(
        item_id=meta.item_id,
        scanner_id=meta.scanner_id,
        verdict=verdict,
        reason=None,
        detail=detail,
        objects=tuple(objects),
        item_score=max(scores) if scores else None,
        scan_start_wall=meta.scan_start_wall,
        scan_end_wall=meta.scan_end_wall,
        decided_wall=now_wall,
        latency_ms=max(0.0, (now_mono - meta.scan_end_mono) * 1000.0),
        encoder_start=meta.encoder_start,
        encoder_end=meta.encoder_end,
        models=tuple(models),
        overlay_jpeg=overlay_jpeg,
        overlay_note=overlay_note,
        item_uid=meta.uid,
    )


class DecideStage:
    """The decide step: a localised item's verdict (any reason on any object), before its picture and camera
    outlines."""

    def __call__(self, item: LocalisedItem) -> DecidedItem:
        decision = decide(item.meta, item.objects, time.time(), time.monotonic(), item.models.refs)
        return DecidedItem(item.meta, item.image, decision)
