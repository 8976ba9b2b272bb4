"""Where records wait for the broker: the disk outbox, or memory while the outbox cannot write.

Storage faults: when the outbox cannot write (disk full, I/O error, read-only file system, or it could not even
be opened at start), ``put`` keeps the records in a memory overflow bounded by ``mqtt.outbox.memory_max_bytes``
(over it the oldest health, image, then item records are dropped and counted; alarms never), says why in
``problem`` and raises ``PublishError`` so the pipeline offers the decision again later. ``retry`` (the
publisher calls it every second) opens the outbox, writes the overflow into it, deletes acknowledged records
and clears ``problem`` once it writes again. A record counts as stored when it is in the outbox or was
acknowledged by the broker from memory (``edge.publish.overflow`` remembers those), so a retry after such a
delivery writes nothing.

Thread-safe: one re-entrant lock around the outbox handle and the overflow. No network here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from edge.config.mqtt import OutboxConfig
from edge.errors import PublishError
from edge.publish.health import OutboxBacklog
from edge.publish.outbox import Outbox, OutboxRecord, OutboxWriteError, StoredRecord
from edge.publish.overflow import MemoryOverflow
from edge.publish.topics import RecordKind

log = logging.getLogger(__name__)

_DELIVERED_MEMORY = 50_000
"""Record ids delivered from memory remembered, so a retried decision is not stored and sent again."""


class RecordStore:
    """The outbox with its memory overflow; see the module docstring.

    Raises:
        PublishError: at construction, when the file is not an outbox this software can use (corrupt, newer
            schema). A storage fault is not raised: it is ``problem`` until ``retry`` succeeds.
    """

    def __init__(self, config: OutboxConfig, on_put: Callable[[], None]) -> None:
        self.config = config
        self._on_put = on_put
        self._lock = threading.RLock()
        self._memory = MemoryOverflow(config.memory_max_bytes, _DELIVERED_MEMORY)
        self._pending_deletes: list[int] = []
        self._problem: str | None = None
        self.outbox: Outbox | None = None
        self._open()

    def _open(self) -> bool:
        """Open the outbox; on a storage fault (disk full, read-only, I/O) set ``problem`` and return False."""
        cfg = self.config
        try:
            self.outbox = Outbox(cfg.path, cfg.max_records, cfg.synchronous, on_put=self._on_put,
                                 max_bytes=cfg.max_bytes)
        except OutboxWriteError as exc:
            self._set_problem(exc)
            return False
        return True

    def _set_problem(self, exc: OutboxWriteError) -> None:
        problem = f"outbox cannot write: {exc.reason} ({self.config.path})"
        if problem != self._problem:
            log.error("mqtt: %s; records kept in memory (at most %d bytes) and published from there: %s",
                      problem, self.config.memory_max_bytes, exc)
        self._problem = problem

    def _clear_problem(self) -> None:
        if self._problem is not None:
            log.warning("mqtt: outbox %s writes again", self.config.path)
        self._problem = None

    @property
    def problem(self) -> str | None:
        """Why storing is unhealthy (None when fine): the outbox cannot write, or holds only alarms over its
        bounds, or the memory overflow does."""
        with self._lock:
            parts = [self._problem, self._memory.over, self.outbox.over_bound if self.outbox is not None else None]
        return "; ".join(p for p in parts if p) or None

    # ---- storing (any thread) -----------------------------------------------------------------------------

    def undelivered(self, records: Sequence[OutboxRecord]) -> list[OutboxRecord]:
        """``records`` less those the broker already acknowledged from memory."""
        with self._lock:
            return [r for r in records if not self._memory.was_delivered(r.record_id)]

    def is_over_bound(self, records: Sequence[OutboxRecord]) -> bool:
        """Whether putting ``records`` would take the outbox over its bounds (and so evict)."""
        outbox = self.outbox
        return outbox is not None and outbox.is_over_bound(len(records), sum(len(r.payload) for r in records))

    def put(self, records: Sequence[OutboxRecord]) -> None:
        """Store ``records`` in the outbox (after what memory holds: older first), or keep them in memory.

        Raises:
            PublishError: they are only in memory (the outbox cannot write); offer them again later.
        """
        with self._lock:
            if self.outbox is not None:
                try:
                    if len(self._memory):
                        self._migrate_locked()
                    self.outbox.put(records)
                except OutboxWriteError as exc:
                    self._set_problem(exc)
                else:
                    for r in records:
                        self._memory.forget(r.record_id)
                    if not len(self._memory) and not self._pending_deletes:
                        self._clear_problem()
                    return
            was_over = self._memory.over
            self._memory.add(records)
            if self._memory.over and not was_over:
                log.warning("mqtt: %d bytes of alarms kept in memory, over mqtt.outbox.memory_max_bytes (%d): "
                            "alarms are never dropped", self._memory.bytes, self._memory.max_bytes)
            problem = self._problem
        self._on_put()
        raise PublishError(f"{records[0].item_id or records[0].record_id}: not stored ({problem}); kept in "
                           "memory and published from there until the outbox writes again")

    def _migrate_locked(self) -> None:
        """Write the records held in memory (except those in flight from there) into the outbox."""
        assert self.outbox is not None
        movable = self._memory.movable()
        if movable:
            self.outbox.put(movable)
            for r in movable:
                self._memory.forget(r.record_id)
            log.info("mqtt: %d record(s) kept in memory written to the outbox", len(movable))

    # ---- the publisher's side -----------------------------------------------------------------------------

    def retry(self) -> None:
        """After a storage fault: open the outbox, delete acknowledged records, migrate memory, or probe."""
        with self._lock:
            if self._problem is None and not len(self._memory) and not self._pending_deletes:
                return
            if self.outbox is None and not self._open():
                return
            assert self.outbox is not None
            try:
                if self._pending_deletes:
                    self.outbox.delete(self._pending_deletes)
                    self._pending_deletes = []
                if len(self._memory):
                    self._migrate_locked()
                elif self._problem is not None:
                    self.outbox.probe()
            except OutboxWriteError as exc:
                self._set_problem(exc)
                self.outbox.compact()
                return
            if not len(self._memory):
                self._clear_problem()

    def fetch(self, after_seq: int, limit: int, exclude: frozenset[int]) -> list[StoredRecord]:
        """Up to ``limit`` outbox records after ``after_seq`` in order (none while the outbox is not open)."""
        return self.outbox.fetch(after_seq, limit, exclude) if self.outbox is not None else []

    def delete(self, seqs: list[int]) -> None:
        """Delete acknowledged (or expired) records; on a full disk keep their seqs and retry later (they may
        be sent again meanwhile: subscribers drop redeliveries by record id)."""
        if self.outbox is None:
            return
        with self._lock:
            try:
                self.outbox.delete([*self._pending_deletes, *seqs])
                self._pending_deletes = []
            except OutboxWriteError as exc:
                self._pending_deletes.extend(seqs)
                self._set_problem(exc)

    def send_from_memory(self, limit: int, send: Callable[[OutboxRecord], int | None]) -> dict[int, str]:
        """Send up to ``limit`` records held in memory and not in flight, alarms first, with ``send`` (which
        returns the message id, or None for an expired record, dropped here); message id -> record id.

        Under the lock, so a concurrent ``put`` cannot move a record into the outbox while it goes out."""
        sent: dict[int, str] = {}
        with self._lock:
            for r in self._memory.to_send(limit):
                mid = send(r)
                if mid is None:
                    self._memory.forget(r.record_id)
                    continue
                sent[mid] = r.record_id
                self._memory.sending(r.record_id)
        return sent

    def memory_acknowledged(self, record_id: str, ok: bool) -> None:
        with self._lock:
            self._memory.acknowledged(record_id, ok)

    def backlog(self) -> OutboxBacklog:
        """Records waiting (in the outbox and in memory), by kind, and evictions since start."""
        base = self.outbox.backlog() if self.outbox is not None else OutboxBacklog(0, 0, 0, 0, 0.0)
        with self._lock:
            waiting = self._memory.counts()
            evicted = dict(self._memory.evicted)
            in_memory, memory_bytes = len(self._memory), self._memory.bytes
        return OutboxBacklog(
            alarm=base.alarm + waiting[RecordKind.ALARM], item=base.item + waiting[RecordKind.ITEM],
            image=base.image + waiting[RecordKind.IMAGE], health=base.health + waiting[RecordKind.HEALTH],
            oldest_age_s=base.oldest_age_s, evicted_item=base.evicted_item + evicted[RecordKind.ITEM],
            evicted_image=base.evicted_image + evicted[RecordKind.IMAGE],
            evicted_health=base.evicted_health + evicted[RecordKind.HEALTH], bytes=base.bytes,
            in_memory=in_memory, memory_bytes=memory_bytes,
        )

    def close(self) -> None:
        """The connection is gone: write what memory holds into the outbox if it can, say what is lost, close."""
        with self._lock:
            self._memory.abandon_sending()
            if len(self._memory) and (self.outbox is not None or self._open()):
                try:
                    self._migrate_locked()
                except OutboxWriteError as exc:
                    self._set_problem(exc)
            if len(self._memory):
                kinds = {k.value: n for k, n in self._memory.counts().items() if n}
                log.error("mqtt: closing with %s record(s) only in memory (the outbox cannot write): they are "
                          "lost unless their decisions are offered again", kinds)
            if self.outbox is not None:
                self.outbox.close()
