"""Payloads against the shipped JSON Schemas, record ids, topics and the image size cap."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import cv2
import jsonschema
import numpy as np
import pytest
from publish_helpers import make_decision

from edge.publish.health import (
    DecisionCounts,
    DiskUsage,
    HealthSnapshot,
    LinkHealth,
    LinkHealthState,
    OutboxBacklog,
    QueueDepth,
    StageLatency,
    StatusState,
)
from edge.publish.images import fit_jpeg
from edge.publish.payloads import decision_payload, encode, health_payload, record_id, status_payload
from edge.publish.topics import RecordKind, Topics
from edge.records import Verdict
from edge.schemas import SCHEMA_NAMES, file_name, load, validator


def roundtrip(body: object) -> dict[str, object]:
    out: dict[str, object] = json.loads(encode(body))  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_shipped_schemas_are_valid_draft_2020_12(name: str) -> None:
    doc = load(name)
    jsonschema.Draft202012Validator.check_schema(doc)
    assert doc["title"] == name and file_name(name).endswith(".schema.json")


@pytest.mark.parametrize("index", [0, 11, 1, 3])  # alarm, unscreened, clear (camera polygon), clear (none)
def test_item_and_alarm_payloads_validate(index: int) -> None:
    d = make_decision(index)
    item = roundtrip(decision_payload(d, "site1", RecordKind.ITEM, "x/images/i", 1234, None))
    validator("xray-edge/item@2").validate(item)
    assert item["verdict"] == d.verdict.value and item["item_id"] == d.item_id
    if d.verdict.needs_operator:
        alarm = roundtrip(decision_payload(d, "site1", RecordKind.ALARM, None, None, "no overlay"))
        validator("xray-edge/alarm@2").validate(alarm)
        assert alarm["item_record_id"] == item["record_id"] != alarm["record_id"]
    else:
        alarm = roundtrip(decision_payload(d, "site1", RecordKind.ALARM, None, None, None))
        with pytest.raises(jsonschema.ValidationError, match="clear"):
            validator("xray-edge/alarm@2").validate(alarm)  # the schema itself refuses a CLEAR alarm


def test_schema_rejects_a_corrupt_item() -> None:
    item = roundtrip(decision_payload(make_decision(0), "site1", RecordKind.ITEM, None, None, None))
    v = validator("xray-edge/item@2")
    for key, bad in (("verdict", "maybe"), ("record_id", "not-a-uuid"), ("objects", [{"object_id": 1}])):
        with pytest.raises(jsonschema.ValidationError):
            v.validate({**item, key: bad})
    with pytest.raises(jsonschema.ValidationError):  # reason must be set iff unscreened
        v.validate({**item, "reason": "model_error"})


def test_record_ids_are_stable_and_distinct() -> None:
    a = record_id("site1", "s1", "item-1", RecordKind.ITEM)
    assert a == record_id("site1", "s1", "item-1", RecordKind.ITEM)
    others = {record_id("site1", "s1", "item-1", RecordKind.ALARM), record_id("site1", "s1", "item-2", "item"),
              record_id("site2", "s1", "item-1", "item"), record_id("site1", "s2", "item-1", "item")}
    assert a not in others and len(others) == 4
    d = make_decision(5)
    p1 = decision_payload(d, "site1", RecordKind.ALARM, None, None, None)
    time.sleep(0.01)
    p2 = decision_payload(replace(d, decided_wall=time.time()), "site1", RecordKind.ALARM, None, None, None)
    assert p1["record_id"] == p2["record_id"]


def test_non_finite_scores_become_null_not_invalid_json() -> None:
    d = replace(make_decision(0), item_score=math.nan, latency_ms=math.inf)
    item = roundtrip(decision_payload(d, "site1", RecordKind.ITEM, None, None, None))
    assert item["item_score"] is None and item["latency_ms"] is None
    validator("xray-edge/item@2").validate(item)


def test_status_and_health_payloads_validate() -> None:
    status = roundtrip(status_payload("site1", "s1", StatusState.DEGRADED, "camera lost", time.time(), "edge-x"))
    validator("xray-edge/status@1").validate(status)
    snap = HealthSnapshot(
        uptime_s=12.0, queues=(QueueDepth("frames", 3, 64),), latencies=(StageLatency("detect", 20, 31, 40, 99),),
        links=(LinkHealth("firmware", LinkHealthState.UP),), decisions=DecisionCounts(4, 90, 1),
        disks=(DiskUsage("/var/lib/edge", 10**9, 10**10),),
    )
    health = roundtrip(health_payload("site1", "s1", snap, (StatusState.ONLINE, ""),
                                      LinkHealth("mqtt", LinkHealthState.ERROR, "wrong CA", time.time()),
                                      OutboxBacklog(1, 2, 3, 4, 5.0, 6, 7, 8)))
    validator("xray-edge/health@1").validate(health)
    links = health["links"]
    assert isinstance(links, list) and [link["name"] for link in links] == ["firmware", "mqtt"]
    assert health["outbox"] == {"alarm": 1, "item": 2, "image": 3, "health": 4, "oldest_age_s": 5.0,
                                "evicted": {"item": 6, "image": 7, "health": 8}}
    with pytest.raises(jsonschema.ValidationError):
        validator("xray-edge/health@1").validate({**health, "status": "sleepy"})


def test_topics_layout_and_unsafe_item_ids() -> None:
    t = Topics.for_site("hub", "sc1")
    assert (t.status, t.items, t.alarms, t.health) == (
        "xray/hub/sc1/status", "xray/hub/sc1/items", "xray/hub/sc1/alarms", "xray/hub/sc1/health")
    assert t.image("a/b+c#") == "xray/hub/sc1/images/a_b_c_"
    assert Topics.for_site("hub", "sc1", "plant/7/").items == "plant/7/items"
    with pytest.raises(ValueError, match="wildcards"):
        Topics("xray/+/x")


def _noise_jpeg(side: int) -> bytes:
    rng = np.random.default_rng(1)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, 98])
    assert ok
    return buf.tobytes()


def test_overlay_over_the_cap_is_reduced_to_fit_and_stays_a_jpeg() -> None:
    big = _noise_jpeg(800)
    cap = 60_000
    assert len(big) > 5 * cap
    fitted = fit_jpeg(big, cap)
    assert fitted.jpeg is not None and len(fitted.jpeg) <= cap
    img = cv2.imdecode(np.frombuffer(fitted.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[2] == 3
    assert fitted.note is not None and "reduced" in fitted.note
    small = _noise_jpeg(40)
    assert fit_jpeg(small, cap).jpeg == small  # under the cap: untouched


def test_undecodable_overlay_is_dropped_with_a_note() -> None:
    fitted = fit_jpeg(b"\xff\xd8garbage" * 10_000, 10_000)
    assert fitted.jpeg is None and fitted.note is not None and "not a decodable JPEG" in fitted.note


def test_unscreened_decision_has_reason_in_payload() -> None:
    d = make_decision(11)
    assert d.verdict is Verdict.UNSCREENED
    alarm = roundtrip(decision_payload(d, "site1", RecordKind.ALARM, None, None, None))
    assert alarm["reason"] == "deadline_missed" and alarm["objects"] == []
