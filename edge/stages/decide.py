"""Decide: the per-item verdict from object results (max rule), and the UNSCREENED decision for failures.

ALARM when any object's anomaly score is at or above its threshold (bag score = max object score, AUROC_M in
seed 000); CLEAR otherwise; UNSCREENED with a reason whenever screening did not happen in full. This module is
the only place that builds ``Decision`` records, so the invariants live in one spot. The verdict is worked out
here once (``DecideStage``), before the map stage draws and maps it: the overlay and its caption read it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from edge.errors import BackendError, BundleError, CalibrationError, FrameError, ItemFailed, SourceError
from edge.records import (
    DecidedItem,
    Decision,
    ItemMeta,
    LocalisedItem,
    ModelRef,
    ObjectResult,
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


def decide(meta: ItemMeta, objects: Sequence[ObjectResult], now_wall: float, now_mono: float,
           models: Sequence[ModelRef] = (), overlay_jpeg: bytes | None = None,
           overlay_note: str | None = None) -> Decision:
    """ALARM if any object is anomalous (score >= its threshold), else CLEAR; item score = max object score."""
    scores = [o.anomaly_score for o in objects if o.anomaly_score is not None]
    anomalous = [o for o in objects if o.anomalous]
    verdict = Verdict.ALARM if anomalous else Verdict.CLEAR
    detail = (f"{len(anomalous)} of {len(objects)} objects anomalous" if anomalous
              else f"{len(objects)} objects, none anomalous")
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
    """The decide step: a localised item's verdict (max rule), before its picture and camera outlines."""

    def __call__(self, item: LocalisedItem) -> DecidedItem:
        decision = decide(item.meta, item.objects, time.time(), time.monotonic(), item.models.refs)
        return DecidedItem(item.meta, item.image, decision)
