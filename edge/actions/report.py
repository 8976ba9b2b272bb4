"""Where finished actions are reported: beside the item's record in the audit store, and on ``<prefix>/actions``.

Two small writers with one method each (``write(row, all_rows_of_the_item)``), raising on failure so the worker
keeps the row unreported and tries again: the audit writer rewrites ``<record stem>.actions.json`` (a JSON list of
every finished action of the item, atomically, through ``AuditStore.write_beside``), the MQTT writer puts one
``action-1`` record into the MQTT sink's outbox (QoS of the ``mqtt:`` section, never evicted, same record id on
a repeat so a subscriber sees it once).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Protocol

from edge.actions.records import action_payload
from edge.actions.store import ActionRow
from edge.publish.compose import JSON
from edge.publish.outbox import OutboxRecord
from edge.publish.payloads import JsonValue, encode
from edge.publish.topics import RecordKind

_NAMESPACE = uuid.UUID("0b6f8a52-3c1e-5d4a-8f27-6a9e1d2c7b35")


def row_payload(row: ActionRow) -> dict[str, JsonValue]:
    assert row.outcome is not None
    return action_payload(row.record_id, row.item_id, row.action, row.outcome, row.detail,
                          row.done_wall if row.done_wall is not None else time.time())


class ActionReporter(Protocol):
    def write(self, row: ActionRow, item_rows: list[ActionRow]) -> None:
        """Report ``row`` (finished); ``item_rows`` are every finished action of its item, ``row`` included."""
        ...


class BesideRecord(Protocol):
    def write_beside(self, decided_wall: float, item_id: str, record_id: str, suffix: str, data: bytes) -> object: ...


class AuditActionsFile:
    """``<record stem>.actions.json`` beside the item's audit record (fault actions have no item: not written)."""

    SUFFIX = ".actions.json"

    def __init__(self, audit: BesideRecord) -> None:
        self._audit = audit

    def write(self, row: ActionRow, item_rows: list[ActionRow]) -> None:
        if row.item_id is None or row.record_id is None:
            return
        body = [row_payload(r) for r in item_rows]
        self._audit.write_beside(row.decided_wall, row.item_id, row.record_id, self.SUFFIX,
                                 json.dumps(body, sort_keys=True, indent=1).encode())


class RecordOutbox(Protocol):
    def store_records(self, records: list[OutboxRecord], wait_for_drain: bool) -> None: ...


class MqttActions:
    """One ``action-1`` record per finished action on ``topic`` through the MQTT sink's outbox."""

    def __init__(self, outbox: RecordOutbox, topic: str, qos: int) -> None:
        self._outbox = outbox
        self.topic = topic
        self._qos = qos

    def write(self, row: ActionRow, item_rows: list[ActionRow]) -> None:
        payload = row_payload(row)
        key = f"{row.uid}/{row.action.value}/{payload['outcome']}"
        record = OutboxRecord(
            record_id=str(uuid.uuid5(_NAMESPACE, key)), kind=RecordKind.ACTION, topic=self.topic,
            payload=encode(payload), qos=self._qos, retain=False, content_type=JSON, created_wall=time.time(),
            schema=str(payload["schema"]), item_id=row.item_id)
        self._outbox.store_records([record], wait_for_drain=False)
