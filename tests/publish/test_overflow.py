"""The memory overflow the MQTT sink uses while its outbox cannot write: bounded in bytes, alarms never dropped."""

from __future__ import annotations

import time

from edge.publish.outbox import OutboxRecord
from edge.publish.overflow import MemoryOverflow
from edge.publish.topics import RecordKind


def rec(i: int, kind: RecordKind, size: int = 100) -> OutboxRecord:
    return OutboxRecord(record_id=f"{kind}-{i}", kind=kind, topic="t", payload=bytes(size), qos=1, retain=False,
                        content_type="x", created_wall=time.time())


def test_over_its_bound_it_drops_health_then_images_then_items_and_keeps_alarms() -> None:
    mem = MemoryOverflow(max_bytes=1000)
    mem.add([rec(0, RecordKind.ALARM), rec(0, RecordKind.ITEM), rec(0, RecordKind.IMAGE, 400),
             rec(0, RecordKind.HEALTH), rec(1, RecordKind.IMAGE, 300)])
    assert (len(mem), mem.bytes) == (5, 1000)
    mem.add([rec(1, RecordKind.ALARM)])  # 1100: the health record goes first
    assert mem.evicted[RecordKind.HEALTH] == 1 and mem.bytes == 1000
    mem.add([rec(2, RecordKind.ALARM, 500)])  # the oldest image, then the next, until under the bound
    assert mem.evicted[RecordKind.IMAGE] == 2 and mem.counts()[RecordKind.ITEM] == 1 and mem.bytes == 800
    mem.add([rec(3, RecordKind.ALARM, 500)])  # the item goes, then only alarms are left over the bound
    assert mem.evicted[RecordKind.ITEM] == 1 and mem.counts() == {
        RecordKind.ALARM: 4, RecordKind.ITEM: 0, RecordKind.IMAGE: 0, RecordKind.HEALTH: 0, RecordKind.ACTION: 0}
    assert mem.bytes == 1200 and mem.over is not None
    mem.forget("alarm-3")
    assert mem.over is None


def test_alarms_are_sent_first_and_a_delivered_record_is_remembered_not_kept() -> None:
    mem = MemoryOverflow(max_bytes=10_000, remember_delivered=2)
    mem.add([rec(0, RecordKind.ITEM), rec(0, RecordKind.IMAGE), rec(0, RecordKind.ALARM)])
    mem.add([rec(0, RecordKind.ALARM)])  # the same record again (a retried decision): held once
    assert len(mem) == 3
    first = mem.to_send(2)
    assert [r.kind for r in first] == [RecordKind.ALARM, RecordKind.ITEM]
    for r in first:
        mem.sending(r.record_id)
    assert [r.record_id for r in mem.to_send(5)] == ["image-0"] == [r.record_id for r in mem.movable()]
    mem.forget("alarm-0")  # in flight: stays until its acknowledgement
    assert len(mem) == 3
    mem.acknowledged("alarm-0", ok=True)
    mem.acknowledged("item-0", ok=False)  # rejected: sent again later
    assert mem.was_delivered("alarm-0") and not mem.was_delivered("item-0")
    assert {r.record_id for r in mem.to_send(5)} == {"item-0", "image-0"}
    for i in range(1, 3):
        mem.add([rec(i, RecordKind.ALARM)])
        mem.sending(f"alarm-{i}")
        mem.acknowledged(f"alarm-{i}", ok=True)
    assert not mem.was_delivered("alarm-0"), "only the most recent deliveries are remembered"
