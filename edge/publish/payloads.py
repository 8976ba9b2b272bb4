"""JSON payloads for the items, alarms, status and health topics, and their stable record ids.

Every payload carries ``schema`` (e.g. ``xray-edge/item@1``), ``schema_version`` and ``record_id``. The JSON
Schema of each lives in ``edge/schemas/`` and is checked in the tests; a field is added only with a new
``schema_version`` if a subscriber could misread it. ``record_id`` is a UUIDv5 of site, scanner, item id, the
item's ``uid`` (drawn once when the item was accepted, kept across restarts) and record kind, so a redelivered
or re-published record carries the same id and subscribers can drop it, while a new item that reuses an old
item id (a firmware counter restarting, a file dropped twice) gets new ids.

Built once, when the record enters the outbox: the stored bytes are what every (re)delivery sends. Non-finite
floats become ``null`` (JSON has no NaN). No I/O here.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence

from edge.publish.health import HealthSnapshot, LinkHealth, OutboxBacklog, StatusState
from edge.publish.topics import RecordKind
from edge.records import AlarmReason, Decision, ObjectPart, ObjectResult, Verdict

SCHEMA_VERSION = 1
DECISION_SCHEMA_VERSION = 2
"""Items and alarms: version 2 (issue 32) says why an item alarmed (``reasons``), which version 1 could not."""
# Every JSON record the box writes for others names its schema; all the names live here.
ITEM_SCHEMA = "xray-edge/item@2"
ALARM_SCHEMA = "xray-edge/alarm@2"
MQTT_STATUS_SCHEMA = "xray-edge/status@1"
"""The retained MQTT ``status`` record (and the last will): availability only (state, reason, since, client id)."""
HEALTH_SCHEMA = "xray-edge/health@1"
STATUS_FILE_SCHEMA = "xray-edge/service-status@1"
"""The local status file ``edge status`` reads (``edge.status.StatusReport``). Not the MQTT status record: it is a
full report for the person at the box (pid, versions, problems by component, recent decisions), never sent over
MQTT and without a JSON Schema file, so it keeps its own name and both can change apart."""

_NAMESPACE = uuid.UUID("6f3c2a55-7d0e-5b7e-9a51-8c1d0e2f4b10")

JsonValue = None | bool | int | float | str | Sequence["JsonValue"] | Mapping[str, "JsonValue"]


def record_id(site_id: str, scanner_id: str, item_id: str, kind: RecordKind | str, uid: str = "") -> str:
    """Stable id of one record: the same item (``uid``) and kind always give the same id (UUIDv5)."""
    key = f"{site_id}/{scanner_id}/{item_id}/{kind}" + (f"/{uid}" if uid else "")
    return str(uuid.uuid5(_NAMESPACE, key))


def encode(payload: Mapping[str, JsonValue]) -> bytes:
    """Compact UTF-8 JSON; raises ValueError on NaN/inf (callers pass values through ``_num`` first)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")


def _num(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _points(points: Sequence[tuple[float, float]] | None) -> list[list[float | None]] | None:
    if points is None:
        return None
    return [[_num(x), _num(y)] for x, y in points]


def _part(part: ObjectPart) -> dict[str, JsonValue]:
    return {
        "score": _num(part.score),
        "anomalous": part.anomalous,
        "polygon_xray": _points(part.polygon_xray),
        "polygon_camera": _points(part.polygon_camera),
    }


def _reason(reason: AlarmReason) -> dict[str, JsonValue]:
    return {"kind": reason.kind.value, "label": reason.label, "score": _num(reason.score),
            "threshold": _num(reason.threshold)}


def _object(obj: ObjectResult) -> dict[str, JsonValue]:
    body: dict[str, JsonValue] = {
        "object_id": obj.object_id,
        "box": {"x1": _num(obj.box.x1), "y1": _num(obj.box.y1), "x2": _num(obj.box.x2), "y2": _num(obj.box.y2)},
        "label": obj.label,
        "detector_score": _num(obj.detector_score),
        "anomaly_score": _num(obj.anomaly_score),
        "threshold": _num(obj.threshold),
        "anomalous": obj.anomalous,
        "polygon_xray": _points(obj.polygon_xray),
        "polygon_camera": _points(obj.polygon_camera),
        "classifier_score": _num(obj.classifier_score),
        "classifier_threshold": _num(obj.classifier_threshold),
        "reasons": [_reason(r) for r in obj.reasons],
    }
    if obj.parts:  # optional: only anomalous objects with an anomaly map have parts (bounded by the schema)
        body["parts"] = [_part(p) for p in obj.parts]
    return body


def decision_payload(
    decision: Decision,
    site_id: str,
    kind: RecordKind,
    image_topic: str | None,
    image_bytes: int | None,
    image_note: str | None,
) -> dict[str, JsonValue]:
    """Payload for the items topic (``kind`` ITEM) or the alarms topic (``kind`` ALARM).

    The alarm record has the same body as the item record plus ``item_record_id`` so a subscriber on both
    topics can tie them together.
    """
    if kind not in (RecordKind.ITEM, RecordKind.ALARM):
        raise ValueError(f"decision payloads are items or alarms, not {kind}")
    body: dict[str, JsonValue] = {
        "schema": ITEM_SCHEMA if kind is RecordKind.ITEM else ALARM_SCHEMA,
        "schema_version": DECISION_SCHEMA_VERSION,
        "record_id": record_id(site_id, decision.scanner_id, decision.item_id, kind, decision.item_uid),
        "site_id": site_id,
        "scanner_id": decision.scanner_id,
        "item_id": decision.item_id,
        "verdict": decision.verdict.value,
        "reason": decision.reason.value if decision.reason is not None else None,
        "detail": decision.detail,
        "item_score": _num(decision.item_score),
        "scan_start_wall": _num(decision.scan_start_wall),
        "scan_end_wall": _num(decision.scan_end_wall),
        "decided_wall": _num(decision.decided_wall),
        "latency_ms": _num(decision.latency_ms),
        "encoder_start": decision.encoder_start,
        "encoder_end": decision.encoder_end,
        "objects": [_object(o) for o in decision.objects],
        "models": [{"role": m.role, "name": m.name, "version": m.version, "sha256": m.sha256}
                   for m in decision.models],
        "image": None if image_topic is None else {"topic": image_topic, "bytes": image_bytes},
        "image_note": image_note,
        "reasons": list(decision.reason_codes) if decision.verdict is Verdict.ALARM else [],
    }
    if kind is RecordKind.ALARM:
        body["item_record_id"] = record_id(site_id, decision.scanner_id, decision.item_id, RecordKind.ITEM,
                                           decision.item_uid)
    return body


def status_payload(
    site_id: str, scanner_id: str, state: StatusState, reason: str, since_wall: float, client_id: str
) -> dict[str, JsonValue]:
    """Payload of the retained status topic (also the last will, with state OFFLINE)."""
    return {
        "schema": MQTT_STATUS_SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "record_id": record_id(site_id, scanner_id, f"status-{since_wall!r}", f"status-{state}"),
        "site_id": site_id,
        "scanner_id": scanner_id,
        "state": state.value,
        "reason": reason,
        "since_wall": since_wall,
        "client_id": client_id,
    }


def _link(link: LinkHealth) -> dict[str, JsonValue]:
    return {"name": link.name, "state": link.state.value, "reason": link.reason,
            "since_wall": _num(link.since_wall)}


def health_payload(
    site_id: str,
    scanner_id: str,
    snapshot: HealthSnapshot,
    status: tuple[StatusState, str],
    broker: LinkHealth,
    backlog: OutboxBacklog,
) -> dict[str, JsonValue]:
    """Payload of the health topic: the pipeline's snapshot plus the publisher's own link and backlog."""
    return {
        "schema": HEALTH_SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "record_id": record_id(site_id, scanner_id, f"health-{snapshot.taken_wall!r}", RecordKind.HEALTH),
        "site_id": site_id,
        "scanner_id": scanner_id,
        "taken_wall": _num(snapshot.taken_wall),
        "uptime_s": _num(snapshot.uptime_s),
        "status": status[0].value,
        "status_reason": status[1],
        "queues": [{"name": q.name, "depth": q.depth, "capacity": q.capacity} for q in snapshot.queues],
        "latencies": [{"stage": s.stage, "p50_ms": _num(s.p50_ms), "p99_ms": _num(s.p99_ms),
                       "max_ms": _num(s.max_ms), "count": s.count} for s in snapshot.latencies],
        "links": [_link(link) for link in (*snapshot.links, broker)],
        "decisions": {"alarm": snapshot.decisions.alarm, "clear": snapshot.decisions.clear,
                      "unscreened": snapshot.decisions.unscreened},
        "disks": [{"path": d.path, "free_bytes": d.free_bytes, "total_bytes": d.total_bytes}
                  for d in snapshot.disks],
        "outbox": {"alarm": backlog.alarm, "item": backlog.item, "image": backlog.image, "health": backlog.health,
                   "oldest_age_s": _num(backlog.oldest_age_s),
                   "evicted": {"item": backlog.evicted_item, "image": backlog.evicted_image,
                               "health": backlog.evicted_health}},
    }
