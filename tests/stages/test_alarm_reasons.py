"""One decision from every signal (issue 32): each reason alarms on its own, reasons reach the payload, the audit
record, the journal and the overlay, and the score stage measures every signal with the real bundles."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config.models import ModelsConfig
from edge.journal import decision_from_json, decision_to_json
from edge.publish.payloads import ALARM_SCHEMA, ITEM_SCHEMA, decision_payload
from edge.publish.topics import RecordKind
from edge.records import AlarmReason, BoxXyxy, ItemMeta, ObjectResult, ReasonKind, Verdict
from edge.schemas import validator
from edge.screening import ModelHolder, load_models
from edge.stages.condition import ConditionedItem
from edge.stages.decide import decide
from edge.stages.detect import DetectStage
from edge.stages.localise import LocaliseStage
from edge.stages.map import draw_xray_overlay, reason_legend
from edge.stages.score import ScoreStage
from export.recipes.simdata import SimRig, iter_items

REPO = Path(__file__).resolve().parents[2]
META = ItemMeta("it-1", "lane-1", 0, 100.0, 101.0, 0.0, 1.0, 1e9)
KNOWN = AlarmReason(ReasonKind.KNOWN, "cutter", 0.7, 0.5)
CLASSIFIER = AlarmReason(ReasonKind.CLASSIFIER, None, 0.97, 0.96)
ANOMALY = AlarmReason(ReasonKind.ANOMALY, None, 0.61, 0.55)


def _below(reason: AlarmReason) -> AlarmReason:
    return AlarmReason(reason.kind, reason.label, reason.threshold - 0.1, reason.threshold)


def _object(object_id: int, *signals: AlarmReason, label: str | None = "cutter") -> ObjectResult:
    return ObjectResult(object_id, BoxXyxy(10, 10, 40, 40), label, 0.7, None, None, False,
                        ((10.0, 10.0), (40.0, 10.0), (40.0, 40.0), (10.0, 40.0)), signals=signals)


@pytest.mark.parametrize("reason", [KNOWN, CLASSIFIER, ANOMALY], ids=lambda r: r.code)
def test_each_reason_alarms_on_its_own(reason: AlarmReason) -> None:
    others = [_below(r) for r in (KNOWN, CLASSIFIER, ANOMALY) if r.kind is not reason.kind]
    alone = decide(META, [_object(0, reason, *others), _object(1, *others)], 200.0, 2.0)
    assert alone.verdict is Verdict.ALARM
    assert alone.reason_codes == (reason.code,)
    assert alone.objects[0].reasons == (reason,) and alone.objects[0].anomalous
    assert not alone.objects[1].reasons and not alone.objects[1].anomalous
    quiet = decide(META, [_object(0, _below(reason), *others)], 200.0, 2.0)
    assert quiet.verdict is Verdict.CLEAR and quiet.reason_codes == () and not quiet.objects[0].anomalous


def test_reasons_and_codes_of_several_signals() -> None:
    d = decide(META, [_object(0, KNOWN, CLASSIFIER), _object(1, ANOMALY, label=None)], 200.0, 2.0)
    assert d.reason_codes == ("anomaly", "classifier", "known:cutter")
    assert "2 of 2 objects alarm" in d.detail
    # a signal exactly at its threshold alarms (>=), as the bundles' thresholds are defined
    at = AlarmReason(ReasonKind.CLASSIFIER, None, 0.5, 0.5)
    assert decide(META, [_object(0, at)], 200.0, 2.0).verdict is Verdict.ALARM


def test_an_object_without_signals_is_judged_by_its_scorer_score_as_before() -> None:
    old = ObjectResult(0, BoxXyxy(0, 0, 5, 5), None, 0.9, 0.8, 0.5, True)
    d = decide(META, [old], 200.0, 2.0)
    assert d.verdict is Verdict.ALARM and d.reason_codes == ("anomaly",)


def test_payloads_carry_reasons_and_validate_against_version_2() -> None:
    d = decide(META, [_object(0, KNOWN, _below(CLASSIFIER)), _object(1, _below(ANOMALY))], 200.0, 2.0)
    item = decision_payload(d, "hub", RecordKind.ITEM, None, None, None)
    alarm = decision_payload(d, "hub", RecordKind.ALARM, None, None, None)
    validator(ITEM_SCHEMA).validate(item)
    validator(ALARM_SCHEMA).validate(alarm)
    assert item["schema"] == "xray-edge/item@2" and item["schema_version"] == 2
    assert item["reasons"] == ["known:cutter"] and alarm["reasons"] == ["known:cutter"]
    objects = item["objects"]
    assert isinstance(objects, list)
    assert objects[0]["reasons"] == [{"kind": "known", "label": "cutter", "score": 0.7, "threshold": 0.5}]
    assert objects[1]["reasons"] == [] and objects[1]["anomalous"] is False
    # the schema holds the contract: a clear item with a reason, or a known reason without its class, is invalid
    clear = decision_payload(decide(META, [_object(0, _below(KNOWN))], 200.0, 2.0), "hub", RecordKind.ITEM, None,
                             None, None)
    validator(ITEM_SCHEMA).validate(clear)
    assert list(validator(ITEM_SCHEMA).iter_errors({**clear, "reasons": ["anomaly"]}))
    bad = json.loads(json.dumps(item))
    bad["objects"][0]["reasons"][0]["label"] = None
    assert list(validator(ITEM_SCHEMA).iter_errors(bad))


def test_the_journal_keeps_reasons_across_a_restart() -> None:
    d = decide(META, [_object(0, KNOWN, _below(ANOMALY))], 200.0, 2.0)
    back = decision_from_json(decision_to_json(d), None)
    assert back.objects[0].reasons == (KNOWN,) and back.objects[0].signals == d.objects[0].signals
    assert back.reason_codes == ("known:cutter",)


def test_the_overlay_colours_alarming_objects_by_reason_and_draws_a_legend() -> None:
    from edge.camera.overlay import REASON_COLOURS, draw_legend

    d = decide(META, [_object(0, CLASSIFIER)], 200.0, 2.0)
    assert reason_legend(d.objects) == (("classifier", REASON_COLOURS["classifier"]),)
    canvas = np.zeros((200, 300, 3), np.uint8)
    draw_legend(canvas, reason_legend(d.objects))
    swatch = canvas[200 - 40:200, 8:27].reshape(-1, 3)
    assert (swatch == np.asarray(REASON_COLOURS["classifier"], np.uint8)).all(axis=1).any()

    class Image:  # the overlay reads only the pseudo-colour picture and the shape
        pc = np.full((200, 300, 3), 128, np.uint8)
        t_high = None
        shape = (200, 300)

    jpeg = draw_xray_overlay(Image(), d.objects)  # type: ignore[arg-type]
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    edge = picture[8:13, 20:30].reshape(-1, 3).astype(int)  # the object's top edge (y = 10)
    orange = np.asarray(REASON_COLOURS["classifier"])
    assert (np.abs(edge - orange).sum(axis=1) < 90).any()


def test_the_score_stage_measures_every_signal_with_the_real_bundles() -> None:
    """Detector threat classes from the bundle, the classifier and the scorer, on fresh virtual-scanner threat
    items (indices from 5,000,000 on are in no training, validation or test set)."""
    models = load_models(ModelsConfig(
        detector={"bundle": REPO / "models" / "detector-classes", "precision": "int8"},
        classifier=REPO / "models" / "classifier-threat", scorer=REPO / "models" / "scorer-stfpm",
        threat_classes={"cutter": 0.3}, backend="onnxruntime", threads=1, allow_unsigned=True))
    holder = ModelHolder(models)
    try:
        assert models.threat_classes == {"cutter": 0.3}
        assert models.detector.session.precision.value == "int8" and models.classifier is not None
        assert models.classifier.session.precision.value == "fp32"
        kinds = set()
        for image, _ in iter_items(SimRig(), 2, 5_000_000, threat_rate=1.0):
            meta = ItemMeta("sim", "sim", 0, 0.0, 0.0, 0.0, 0.0, time.monotonic() + 60)
            localised = LocaliseStage()(ScoreStage(holder)(DetectStage(holder)(ConditionedItem(meta, image))))
            for o in localised.objects:
                signals = {s.kind for s in o.signals}
                assert {ReasonKind.CLASSIFIER, ReasonKind.ANOMALY} <= signals
                assert (ReasonKind.KNOWN in signals) is (o.label == "cutter")
                assert o.classifier_score is not None and o.anomaly_score is not None
                kinds |= signals
            d = decide(meta, localised.objects, 1.0, 1.0, models.refs)
            validator(ITEM_SCHEMA).validate(decision_payload(d, "hub", RecordKind.ITEM, None, None, None))
            assert [m.role for m in d.models] == ["detector", "classifier", "scorer"]
    finally:
        models.close()
    assert {ReasonKind.CLASSIFIER, ReasonKind.ANOMALY} <= kinds
