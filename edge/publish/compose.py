"""Pure record building: a decision, a health snapshot or a status becomes the records the outbox stores.

Kept apart from the paho session and the publisher loop so that what a subscriber receives can be read (and
tested) without a broker or a disk: no I/O, no clock (the caller passes ``now``), no paho. Each record is
encoded once, here; every (re)delivery sends the stored bytes.
"""

from __future__ import annotations

from dataclasses import replace

from edge.config.mqtt import MqttConfig
from edge.config.site import SiteConfig
from edge.publish.health import HealthSnapshot, LinkHealth, OutboxBacklog, StageLatency, StatusState
from edge.publish.images import fit_jpeg
from edge.publish.outbox import OutboxRecord
from edge.publish.payloads import (
    ALARM_SCHEMA,
    HEALTH_SCHEMA,
    ITEM_SCHEMA,
    decision_payload,
    encode,
    health_payload,
    record_id,
    status_payload,
)
from edge.publish.topics import RecordKind, Topics
from edge.records import Decision

JSON = "application/json"
JPEG = "image/jpeg"


def decision_records(decision: Decision, site: SiteConfig, topics: Topics, config: MqttConfig,
                     now_wall: float) -> list[OutboxRecord]:
    """The alarm (ALARM and UNSCREENED only), item and overlay image records of one decision, in that order.

    The overlay is fitted under ``mqtt.image_max_bytes`` first; the item record names the image topic and size
    (or why there is no image) so a subscriber knows whether to wait for it.
    """
    site_id, scanner_id, item_id = site.site_id, decision.scanner_id, decision.item_id
    image_record: OutboxRecord | None = None
    image_note = decision.overlay_note
    if decision.overlay_jpeg is not None:
        fitted = fit_jpeg(decision.overlay_jpeg, config.image_max_bytes)
        if fitted.note is not None:
            image_note = f"{image_note}; {fitted.note}" if image_note else fitted.note
        if fitted.jpeg is not None:
            image_record = OutboxRecord(
                record_id=record_id(site_id, scanner_id, item_id, RecordKind.IMAGE, decision.item_uid),
                kind=RecordKind.IMAGE, topic=topics.image(item_id), payload=fitted.jpeg, qos=config.qos,
                retain=False, content_type=JPEG, created_wall=now_wall, item_id=item_id,
            )
    image_topic = image_record.topic if image_record is not None else None
    image_bytes = len(image_record.payload) if image_record is not None else None
    records: list[OutboxRecord] = []
    kinds = (RecordKind.ALARM, RecordKind.ITEM) if decision.verdict.needs_operator else (RecordKind.ITEM,)
    for kind in kinds:
        body = decision_payload(decision, site_id, kind, image_topic, image_bytes, image_note)
        records.append(OutboxRecord(
            record_id=str(body["record_id"]), kind=kind,
            topic=topics.alarms if kind is RecordKind.ALARM else topics.items,
            payload=encode(body), qos=config.qos, retain=False, content_type=JSON, created_wall=now_wall,
            schema=ALARM_SCHEMA if kind is RecordKind.ALARM else ITEM_SCHEMA, item_id=item_id,
        ))
    if image_record is not None:
        records.append(image_record)
    return records


def health_record(snapshot: HealthSnapshot, site: SiteConfig, topics: Topics, qos: int, interval_s: float,
                  status: tuple[StatusState, str], broker: LinkHealth, backlog: OutboxBacklog,
                  publish_latency: StageLatency | None, now_wall: float) -> OutboxRecord:
    """The health record: the service's snapshot plus the publisher's own broker link, backlog and
    outbox-to-PUBACK latency. It expires after two health intervals (at least 10 s): stale health misleads."""
    if publish_latency is not None:
        snapshot = replace(snapshot, latencies=(*snapshot.latencies, publish_latency))
    body = health_payload(site.site_id, site.scanner_id, snapshot, status, broker, backlog)
    return OutboxRecord(
        record_id=str(body["record_id"]), kind=RecordKind.HEALTH, topic=topics.health, payload=encode(body),
        qos=qos, retain=False, content_type=JSON, created_wall=now_wall,
        expiry_s=max(10, round(2 * interval_s)), schema=HEALTH_SCHEMA,
    )


def status_message(site: SiteConfig, client_id: str, state: StatusState, reason: str,
                   since_wall: float) -> tuple[bytes, str]:
    """The retained status record (also the last will, with state OFFLINE): its bytes and record id."""
    payload = status_payload(site.site_id, site.scanner_id, state, reason, since_wall, client_id)
    return encode(payload), str(payload["record_id"])
