"""Decision builders for the DICOS tests (plain constructors of ``edge.records``, no code under test)."""

from __future__ import annotations

from edge.records import BoxXyxy, Decision, ModelRef, ObjectResult, UnscreenedReason, Verdict

T0 = 1_795_000_000.25  # 2026-11-18, a fixed wall time so the expected DT strings are known in advance

MODELS = (
    ModelRef(role="detector", name="oln-tiny", version="1.4.0", sha256="a1" * 32),
    ModelRef(role="scorer", name="stfpm-parcels", version="2.0.1", sha256="b2" * 32),
)


def knife() -> ObjectResult:
    return ObjectResult(
        object_id=7,
        box=BoxXyxy(100.4, 40.0, 180.6, 90.2),
        label="knife",
        detector_score=0.91,
        anomaly_score=0.83,
        threshold=0.5,
        anomalous=True,
        polygon_xray=((110.0, 45.0), (170.0, 45.0), (170.0, 85.0), (110.0, 85.0)),
    )


def anomaly() -> ObjectResult:
    return ObjectResult(
        object_id=3,
        box=BoxXyxy(10.0, 12.0, 30.0, 40.0),
        label=None,
        detector_score=0.7,
        anomaly_score=1.7,  # normalised scores may exceed 1: probability is clipped
        threshold=0.6,
        anomalous=True,
        polygon_xray=(),
    )


def benign() -> ObjectResult:
    return ObjectResult(
        object_id=12,
        box=BoxXyxy(300.0, 5.0, 420.0, 60.0),
        label=None,
        detector_score=0.88,
        anomaly_score=0.12,
        threshold=0.6,
        anomalous=False,
    )


def decision(
    verdict: Verdict = Verdict.ALARM,
    objects: tuple[ObjectResult, ...] | None = None,
    reason: UnscreenedReason | None = None,
    item_id: str = "parcel-000123",
) -> Decision:
    if objects is None:
        objects = (knife(), anomaly(), benign()) if verdict is Verdict.ALARM else (benign(),)
    return Decision(
        item_id=item_id,
        scanner_id="hub-7/line-2",
        verdict=verdict,
        reason=reason,
        detail="test item",
        objects=objects,
        item_score=max((o.anomaly_score or 0.0 for o in objects), default=None),
        scan_start_wall=T0 - 3.0,
        scan_end_wall=T0 - 1.0,
        decided_wall=T0,
        latency_ms=187.5,
        models=MODELS,
    )
