"""Disk-backed outbox: every record is committed to SQLite before it is published, deleted only on PUBACK.

Sits between the pipeline's publish stage and the MQTT connection (``edge.publish.mqtt``). The database runs
in WAL mode; ``synchronous=FULL`` (default) makes a committed record survive power loss, ``NORMAL`` only a
process crash. Records are replayed in ``seq`` order (insertion order) after an outage or a restart.

Bound and eviction policy (``max_records``): when a put would take the outbox over the bound, the oldest
records are evicted in this order: health first, then overlay images, then item records. Alarm records
(the ``alarms`` topic: ALARM and UNSCREENED) are never evicted; if only alarms are left the outbox grows past
the bound and logs a warning. Evictions are counted and shown on the health topic.

``record_id`` is unique: putting a record whose id is already waiting is a no-op (at-least-once, never twice
stored). Thread-safe: one connection behind one lock. It must not talk to the network.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge.errors import PublishError
from edge.publish.health import OutboxBacklog
from edge.publish.topics import RecordKind

log = logging.getLogger(__name__)

_SCHEMA_VERSION = 1
_DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id    TEXT    NOT NULL UNIQUE,
    kind         TEXT    NOT NULL,
    rank         INTEGER NOT NULL,
    topic        TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    qos          INTEGER NOT NULL,
    retain       INTEGER NOT NULL,
    content_type TEXT    NOT NULL,
    expiry_s     INTEGER,
    created_wall REAL    NOT NULL,
    schema       TEXT,
    item_id      TEXT
);
CREATE INDEX IF NOT EXISTS outbox_rank_seq ON outbox (rank, seq);
"""
_COLUMNS = ("seq, record_id, kind, topic, payload, qos, retain, content_type, expiry_s, created_wall, "
            "schema, item_id")


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One message to publish. ``expiry_s`` is the MQTT 5 message expiry from ``created_wall`` (None = never)."""

    record_id: str
    kind: RecordKind
    topic: str
    payload: bytes
    qos: int
    retain: bool
    content_type: str
    created_wall: float
    expiry_s: int | None = None
    schema: str | None = None
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as read back for publishing; ``seq`` orders replay and names it for deletion."""

    seq: int
    record: OutboxRecord


class Outbox:
    """SQLite outbox. Construct once per process; ``close()`` when done."""

    def __init__(
        self,
        path: Path,
        max_records: int,
        synchronous: Literal["full", "normal"] = "full",
        on_put: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.max_records = max_records
        self._on_put = on_put
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(RecordKind, 0)
        self._evicted = dict.fromkeys(RecordKind, 0)
        self._warned_over_bound = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            # Acknowledged records are deleted on a second connection without an fsync per commit: losing a
            # delete to power loss only means a duplicate on replay, while an fsync per PUBACK would halve the
            # rate at which decisions can be stored. WAL keeps both connections consistent.
            self._acks_db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                            timeout=10.0)
            self._acks_db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise PublishError(f"outbox {path}: schema version {version} is newer than this software "
                                   f"({_SCHEMA_VERSION}); refusing to touch it")
            self._db.executescript(_DDL)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            for kind, count in self._db.execute("SELECT kind, COUNT(*) FROM outbox GROUP BY kind"):
                self._counts[RecordKind(kind)] = int(count)
        except sqlite3.Error as exc:
            raise PublishError(f"outbox {path}: cannot open ({exc}); move the file aside to start empty, "
                               "after saving its records") from exc
        except OSError as exc:
            raise PublishError(f"outbox {path}: cannot create its folder ({exc.strerror})") from exc

    def put(self, records: Sequence[OutboxRecord]) -> int:
        """Commit ``records`` in one transaction (in order); return how many were new.

        Raises:
            PublishError: the database could not store them (disk full, I/O error). Nothing was stored.
        """
        if not records:
            return 0
        added = dict.fromkeys(RecordKind, 0)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for r in records:
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO outbox (record_id, kind, rank, topic, payload, qos, retain, "
                        "content_type, expiry_s, created_wall, schema, item_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (r.record_id, r.kind.value, int(r.kind.rank), r.topic, r.payload, r.qos, int(r.retain),
                         r.content_type, r.expiry_s, r.created_wall, r.schema, r.item_id),
                    )
                    added[r.kind] += cur.rowcount
                evicted = self._evict_locked(sum(self._counts.values()) + sum(added.values()))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback_locked()
                raise PublishError(f"outbox {self.path}: cannot store {len(records)} record(s) ({exc})") from exc
            for kind, n in added.items():
                self._counts[kind] += n
            for kind, n in evicted.items():
                self._counts[kind] -= n
                self._evicted[kind] += n
        if self._on_put is not None:
            self._on_put()
        return sum(added.values())

    def _evict_locked(self, total: int) -> dict[RecordKind, int]:
        evicted = dict.fromkeys(RecordKind, 0)
        excess = total - self.max_records
        for kind in (RecordKind.HEALTH, RecordKind.IMAGE, RecordKind.ITEM):
            if excess <= 0:
                break
            cur = self._db.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE rank = ? ORDER BY seq LIMIT ?)",
                (int(kind.rank), excess),
            )
            evicted[kind] = cur.rowcount
            excess -= cur.rowcount
        if sum(evicted.values()):
            log.warning("outbox %s over its bound of %d records: evicted %s", self.path, self.max_records,
                        {k.value: n for k, n in evicted.items() if n})
        if excess > 0 and not self._warned_over_bound:
            self._warned_over_bound = True
            log.warning("outbox %s holds only alarms and is %d over its bound of %d; alarms are never evicted",
                        self.path, excess, self.max_records)
        elif excess <= 0:
            self._warned_over_bound = False
        return evicted

    def _rollback_locked(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def fetch(self, after_seq: int, limit: int, exclude: frozenset[int] = frozenset()) -> list[StoredRecord]:
        """Up to ``limit`` records with ``seq > after_seq`` in order, skipping the seqs in ``exclude``."""
        with self._lock:
            try:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit + len(exclude)),
                ).fetchall()
            except sqlite3.Error as exc:
                raise PublishError(f"outbox {self.path}: cannot read ({exc})") from exc
        out = [
            StoredRecord(
                seq=row[0],
                record=OutboxRecord(
                    record_id=row[1], kind=RecordKind(row[2]), topic=row[3], payload=bytes(row[4]), qos=row[5],
                    retain=bool(row[6]), content_type=row[7], expiry_s=row[8], created_wall=row[9],
                    schema=row[10], item_id=row[11],
                ),
            )
            for row in rows
            if row[0] not in exclude
        ]
        return out[:limit]

    def delete(self, seqs: Iterable[int]) -> int:
        """Delete acknowledged (or expired) records in one transaction; unknown seqs are ignored."""
        seq_list = list(seqs)
        if not seq_list:
            return 0
        removed = dict.fromkeys(RecordKind, 0)
        # Same lock as put: two connections writing at once would meet in SQLite's busy handler, which sleeps
        # in milliseconds and cut the put rate by three in the benchmark.
        with self._lock:
            try:
                self._acks_db.execute("BEGIN IMMEDIATE")
                for start in range(0, len(seq_list), 500):
                    chunk = seq_list[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    for (kind,) in self._acks_db.execute(
                        f"DELETE FROM outbox WHERE seq IN ({marks}) RETURNING kind", chunk
                    ).fetchall():
                        removed[RecordKind(kind)] += 1
                self._acks_db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._acks_db.execute("ROLLBACK")
                raise PublishError(f"outbox {self.path}: cannot delete acknowledged records ({exc})") from exc
            for kind, n in removed.items():
                self._counts[kind] -= n
        return sum(removed.values())

    def backlog(self) -> OutboxBacklog:
        """Counts by kind (kept in memory), the age of the oldest record and eviction totals."""
        with self._lock:
            row = self._db.execute("SELECT created_wall FROM outbox ORDER BY seq LIMIT 1").fetchone()
            counts = dict(self._counts)
            evicted = dict(self._evicted)
        oldest = max(0.0, time.time() - float(row[0])) if row else 0.0
        return OutboxBacklog(
            alarm=counts[RecordKind.ALARM], item=counts[RecordKind.ITEM], image=counts[RecordKind.IMAGE],
            health=counts[RecordKind.HEALTH], oldest_age_s=oldest, evicted_item=evicted[RecordKind.ITEM],
            evicted_image=evicted[RecordKind.IMAGE], evicted_health=evicted[RecordKind.HEALTH],
        )

    def close(self) -> None:
        """Checkpoint the WAL and close; the file keeps whatever was not acknowledged."""
        with self._lock:
            self._acks_db.close()
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("outbox %s: checkpoint on close failed (%s)", self.path, exc)
            self._db.close()

