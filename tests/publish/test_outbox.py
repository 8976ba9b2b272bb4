"""The SQLite outbox on a real file: order, durability across reopen, de-duplication, eviction, threads."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edge.errors import PublishError
from edge.publish.outbox import Outbox, OutboxRecord
from edge.publish.topics import RecordKind


def rec(i: int, kind: RecordKind = RecordKind.ITEM) -> OutboxRecord:
    return OutboxRecord(record_id=f"{kind}-{i}", kind=kind, topic=f"t/{kind}", payload=f"p{i}".encode(), qos=1,
                        retain=False, content_type="application/json", created_wall=time.time())


def test_records_come_back_in_order_after_reopen_and_only_acked_ones_go(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    box = Outbox(path, max_records=1000)
    box.put([rec(i) for i in range(10)])
    first = box.fetch(0, 4)
    assert [s.record.record_id for s in first] == [f"item-{i}" for i in range(4)]
    box.delete([first[1].seq, first[3].seq])
    box.close()  # as after a crash or restart: a new process opens the same file

    box = Outbox(path, max_records=1000)
    left = box.fetch(0, 100)
    assert [s.record.record_id for s in left] == ["item-0", "item-2", *[f"item-{i}" for i in range(4, 10)]]
    assert left[0].record.payload == b"p0" and left[0].record.qos == 1 and left[0].record.retain is False
    assert box.backlog().item == 8
    assert [s.record.record_id for s in box.fetch(left[2].seq, 2)] == ["item-5", "item-6"]
    box.close()


def test_wal_mode_and_duplicate_record_ids_are_stored_once(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_records=1000)
    assert box.put([rec(1), rec(1), rec(2)]) == 2
    assert box.put([rec(2)]) == 0
    assert box.backlog().total == 2
    box.close()
    with sqlite3.connect(tmp_path / "o.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_eviction_drops_health_then_images_then_items_but_never_alarms(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_records=10)
    box.put([rec(i, RecordKind.ALARM) for i in range(3)] + [rec(i, RecordKind.ITEM) for i in range(3)]
            + [rec(i, RecordKind.IMAGE) for i in range(2)] + [rec(i, RecordKind.HEALTH) for i in range(2)])
    assert box.backlog().total == 10
    box.put([rec(10, RecordKind.ITEM), rec(11, RecordKind.ITEM)])  # 2 over: both health records go
    b = box.backlog()
    assert (b.alarm, b.item, b.image, b.health, b.evicted_health) == (3, 5, 2, 0, 2)
    box.put([rec(20, RecordKind.ALARM), rec(21, RecordKind.ALARM), rec(22, RecordKind.ALARM)])  # images next
    b = box.backlog()
    assert (b.alarm, b.item, b.image, b.evicted_image, b.evicted_item) == (6, 4, 0, 2, 1)
    ids = [s.record.record_id for s in box.fetch(0, 100)]
    assert "item-0" not in ids and "item-1" in ids  # the oldest item went first
    box.put([rec(i, RecordKind.ALARM) for i in range(30, 45)])  # only alarms left: bound exceeded, none lost
    b = box.backlog()
    assert b.item == 0 and b.alarm == 21
    assert sum(1 for s in box.fetch(0, 100) if s.record.kind is RecordKind.ALARM) == 21
    box.close()


def test_concurrent_producers_and_a_consumer_lose_nothing(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_records=100_000, synchronous="normal")
    seen: list[str] = []
    stop = threading.Event()

    def consume() -> None:
        cursor = 0
        while not stop.is_set() or box.backlog().total:
            rows = box.fetch(cursor, 50)
            for s in rows:
                seen.append(s.record.record_id)
                cursor = s.seq
            box.delete(s.seq for s in rows)
            time.sleep(0.001)

    def produce(k: int) -> None:
        for i in range(200):
            box.put([rec(k * 1000 + i, RecordKind.ALARM if i % 3 == 0 else RecordKind.ITEM)])

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    stop.set()
    consumer.join(timeout=20)
    assert len(seen) == len(set(seen)) == 800
    assert box.backlog().total == 0
    box.close()


def test_a_corrupt_outbox_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(PublishError, match=r"o\.sqlite3: cannot open"):
        Outbox(path, max_records=100)
