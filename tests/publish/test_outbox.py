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


def test_eviction_drops_health_then_images_keeps_items_to_four_times_the_bound_and_never_alarms(
        tmp_path: Path) -> None:
    """Issue 29 point 11: item records went at ``max_records`` (32 of 120 items lost); they are small and the
    only trace of an item, so past the bound images go first and items only past four times it."""
    box = Outbox(tmp_path / "o.sqlite3", max_records=10)
    box.put([rec(i, RecordKind.ALARM) for i in range(3)] + [rec(i, RecordKind.ITEM) for i in range(3)]
            + [rec(i, RecordKind.IMAGE) for i in range(2)] + [rec(i, RecordKind.HEALTH) for i in range(2)])
    assert box.backlog().total == 10
    box.put([rec(10, RecordKind.ITEM), rec(11, RecordKind.ITEM)])  # 2 over: both health records go
    b = box.backlog()
    assert (b.alarm, b.item, b.image, b.health, b.evicted_health) == (3, 5, 2, 0, 2)
    box.put([rec(20, RecordKind.ALARM), rec(21, RecordKind.ALARM), rec(22, RecordKind.ALARM)])  # images next
    b = box.backlog()
    assert (b.alarm, b.item, b.image, b.evicted_image, b.evicted_item) == (6, 5, 0, 2, 0)
    assert box.over_bound is None  # over, but not with alarms only: items are kept until 4 x the bound
    box.put([rec(i, RecordKind.ITEM) for i in range(100, 132)])  # 43 records: the 3 oldest items go
    b = box.backlog()
    assert (b.alarm, b.item, b.evicted_item) == (6, 34, 3)
    ids = [s.record.record_id for s in box.fetch(0, 100)]
    assert "item-2" not in ids and "item-10" in ids  # the oldest items went first
    box.close()


def test_only_alarms_over_the_bound_are_kept_and_said(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_records=10)
    box.put([rec(i, RecordKind.ALARM) for i in range(15)])
    assert box.backlog().alarm == 15 and box.over_bound and "alarms are never evicted" in box.over_bound
    box.delete(s.seq for s in box.fetch(0, 8))
    assert box.over_bound is None
    box.close()


def test_byte_bound_evicts_images_then_items_never_alarms(tmp_path: Path) -> None:
    def big(i: int, kind: RecordKind, size: int) -> OutboxRecord:
        return OutboxRecord(record_id=f"{kind}-{i}", kind=kind, topic="t", payload=bytes(size), qos=1,
                            retain=False, content_type="x", created_wall=time.time())

    box = Outbox(tmp_path / "o.sqlite3", max_records=1000, max_bytes=10_000)
    box.put([big(0, RecordKind.ALARM, 1000), big(0, RecordKind.ITEM, 1000)]
            + [big(i, RecordKind.IMAGE, 3000) for i in range(2)])
    assert box.backlog().bytes == 8000
    box.put([big(2, RecordKind.IMAGE, 3000)])  # 11,000 bytes: the oldest image goes
    b = box.backlog()
    assert (b.image, b.evicted_image, b.bytes) == (2, 1, 8000)
    box.put([big(i, RecordKind.ALARM, 3000) for i in range(1, 4)])  # images, then the item go; alarms stay
    b = box.backlog()
    assert (b.alarm, b.item, b.image, b.evicted_image, b.evicted_item) == (4, 0, 0, 3, 1)
    assert b.bytes == 10_000
    box.close()
    reopened = Outbox(tmp_path / "o.sqlite3", max_records=1000, max_bytes=10_000)
    assert reopened.backlog().bytes == 10_000, "byte counts are read back at open"
    reopened.close()


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
