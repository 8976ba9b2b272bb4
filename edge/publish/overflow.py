"""Records the outbox could not store (disk full, I/O error, read-only), held in memory within a byte bound.

Used by ``MqttSink`` while its outbox cannot write: the records are published from here while the broker is
connected and written into the outbox when it writes again. Over ``max_bytes`` the oldest health records are
dropped first, then images, then item records; alarms never (over the bound with only alarms, ``over`` says
so). Drops are counted in ``evicted``. Record ids acknowledged by the broker from here are remembered (a bounded
number), so a decision offered again after its delivery is not stored and sent twice.

Not thread-safe: the sink calls it under its own lock. No I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from edge.publish.outbox import OutboxRecord
from edge.publish.topics import RecordKind

_SEND_ORDER = (RecordKind.ALARM, RecordKind.ACTION, RecordKind.ITEM, RecordKind.IMAGE, RecordKind.HEALTH)
_EVICTION_ORDER = (RecordKind.HEALTH, RecordKind.IMAGE, RecordKind.ITEM)


class MemoryOverflow:
    """Bounded in-memory holding area for records; see the module docstring."""

    def __init__(self, max_bytes: int, remember_delivered: int = 50_000) -> None:
        self.max_bytes = max_bytes
        self._records: OrderedDict[str, OutboxRecord] = OrderedDict()
        self.bytes = 0
        self._sending: set[str] = set()
        self._delivered: OrderedDict[str, None] = OrderedDict()
        self._remember = remember_delivered
        self.evicted = dict.fromkeys(RecordKind, 0)
        self.over: str | None = None
        """Set while only alarms are over ``max_bytes`` (they are kept): a reason for the health status."""

    def __len__(self) -> int:
        return len(self._records)

    def was_delivered(self, record_id: str) -> bool:
        """Whether the broker acknowledged this record from memory (recently enough to be remembered)."""
        return record_id in self._delivered

    def add(self, records: Iterable[OutboxRecord]) -> None:
        """Keep ``records`` (a record id already held is kept once), then drop what is over the bound."""
        for r in records:
            if r.record_id not in self._records:
                self._records[r.record_id] = r
                self.bytes += len(r.payload)
        for kind in _EVICTION_ORDER:
            if self.bytes <= self.max_bytes:
                break
            for rid, r in list(self._records.items()):
                if self.bytes <= self.max_bytes:
                    break
                if r.kind is kind and rid not in self._sending:
                    self._drop(rid)
                    self.evicted[kind] += 1
        if self.bytes > self.max_bytes:
            self.over = f"alarms kept in memory over mqtt.outbox.memory_max_bytes ({self.max_bytes} bytes)"

    def to_send(self, limit: int) -> list[OutboxRecord]:
        """Up to ``limit`` records not in flight, alarms first, then items, images, health (oldest first)."""
        waiting = [r for rid, r in self._records.items() if rid not in self._sending]
        waiting.sort(key=lambda r: _SEND_ORDER.index(r.kind))
        return waiting[:limit]

    def movable(self) -> list[OutboxRecord]:
        """Records not in flight, oldest first: what can be written into the outbox now."""
        return [r for rid, r in self._records.items() if rid not in self._sending]

    def sending(self, record_id: str) -> None:
        """The record was published; it stays until ``acknowledged``."""
        self._sending.add(record_id)

    def acknowledged(self, record_id: str, ok: bool) -> None:
        """The broker's answer: on success the record is delivered and dropped, else it is sent again later."""
        self._sending.discard(record_id)
        if ok:
            self._drop(record_id)
            self._delivered[record_id] = None
            while len(self._delivered) > self._remember:
                self._delivered.popitem(last=False)

    def forget(self, record_id: str) -> None:
        """The record is in the outbox now; one in flight stays until its acknowledgement."""
        if record_id not in self._sending:
            self._drop(record_id)

    def abandon_sending(self) -> None:
        """The connection is gone for good (closing): nothing is in flight any more."""
        self._sending.clear()

    def counts(self) -> dict[RecordKind, int]:
        """Records held, by kind."""
        out = dict.fromkeys(RecordKind, 0)
        for r in self._records.values():
            out[r.kind] += 1
        return out

    def _drop(self, record_id: str) -> None:
        record = self._records.pop(record_id, None)
        if record is not None:
            self.bytes -= len(record.payload)
            if self.bytes <= self.max_bytes:
                self.over = None
