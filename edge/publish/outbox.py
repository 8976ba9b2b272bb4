"""Disk-backed outbox: every record is committed to SQLite before it is published, deleted only on PUBACK.

Sits between the pipeline's publish stage and the MQTT connection (``edge.publish.mqtt``). The database runs
in WAL mode; ``synchronous=FULL`` (default) makes a committed record survive power loss, ``NORMAL`` only a
process crash. Records are replayed in ``seq`` order (insertion order) after an outage or a restart.

Bounds and eviction policy (``max_records``, ``max_bytes`` of payload): the bounds limit what a broker outage
piles up on disk. When a put takes the outbox over either bound, the oldest health records go first, then the
oldest overlay images. Item records are small and each is the only trace of an item at the control room, so
they go only past four times ``max_records`` or past ``max_bytes`` once no image or health record is left.
Alarm records (the ``alarms`` topic: ALARM and UNSCREENED) are never evicted; if only alarms are over the
bound the outbox keeps them, logs a warning and says so in ``over_bound``. Evictions are counted and shown on
the health topic. (While the broker is connected the sink waits a little for the outbox to drain before it
puts, so a burst drains instead of being evicted: ``edge.publish.mqtt``.)

Write failures (disk full, I/O error, read-only file system, also while opening) raise ``OutboxWriteError``
with a short ``reason``; the sink keeps the records in memory meanwhile and retries.

``record_id`` is unique: putting a record whose id is already waiting is a no-op (at-least-once, never twice
stored). Thread-safe: one connection behind one lock. It must not talk to the network.
"""

from __future__ import annotations

import contextlib
import logging
import os
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
_ITEM_BOUND_FACTOR = 4
"""Item records are evicted only past this many times ``max_records`` (or past ``max_bytes``)."""

_COLUMNS = ("seq, record_id, kind, topic, payload, qos, retain, content_type, expiry_s, created_wall, "
            "schema, item_id")


class OutboxWriteError(PublishError):
    """The outbox cannot write (or open) its file; ``reason`` is short, for a status line ("disk full")."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def storage_reason(exc: BaseException, path: Path | None = None) -> str:
    """A short reason for a SQLite or OS write failure: disk full, I/O error, read-only, or the message.

    SQLite says only "unable to open database file" when it cannot create its files on a read-only file
    system, so ``path``'s file system is asked too.
    """
    if path is not None:
        with contextlib.suppress(OSError):
            if os.statvfs(path.parent if not path.is_dir() else path).f_flag & os.ST_RDONLY:
                return "read-only file system"
    text = str(exc).lower()
    errno = getattr(exc, "errno", None)
    if errno == 28 or "disk is full" in text or "no space" in text:
        return "disk full"
    if errno == 30 or "readonly" in text or "read-only" in text:
        return "read-only file system"
    if errno == 5 or "i/o error" in text:
        return "I/O error"
    if errno == 122 or "quota" in text:
        return "disk quota exceeded"
    return getattr(exc, "strerror", None) or str(exc)


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
        max_bytes: int | None = None,
    ) -> None:
        self.path = path
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._on_put = on_put
        self._lock = threading.Lock()
        self._closed = False
        self._counts = dict.fromkeys(RecordKind, 0)
        self._bytes = dict.fromkeys(RecordKind, 0)
        self._evicted = dict.fromkeys(RecordKind, 0)
        self._warned_over_bound = False
        self._next_eviction_log = 0.0
        self.over_bound: str | None = None
        """Set while only alarms are left over a bound (they are kept): a reason for the health status."""
        self._db: sqlite3.Connection | None = None
        self._acks_db: sqlite3.Connection | None = None
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
            if version != _SCHEMA_VERSION:
                self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            for kind, count, size in self._db.execute(
                    "SELECT kind, COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox GROUP BY kind"):
                self._counts[RecordKind(kind)] = int(count)
                self._bytes[RecordKind(kind)] = int(size)
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            reason = storage_reason(exc, path)
            if isinstance(exc, sqlite3.OperationalError) or reason != str(exc):
                raise OutboxWriteError(f"outbox {path}: cannot open ({reason})", reason) from exc
            raise PublishError(f"outbox {path}: cannot open ({exc}); move the file aside to start empty, "
                               "after saving its records") from exc
        except sqlite3.Error as exc:
            self._close_quietly()
            raise OutboxWriteError(f"outbox {path}: cannot open ({exc})", storage_reason(exc, path)) from exc
        except OSError as exc:
            self._close_quietly()
            reason = storage_reason(exc, path)
            raise OutboxWriteError(f"outbox {path}: cannot create its folder ({reason})", reason) from exc
        except PublishError:
            self._close_quietly()
            raise

    def _close_quietly(self) -> None:
        for db in (self._acks_db, self._db):
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    @property
    def acks_db(self) -> sqlite3.Connection:
        assert self._acks_db is not None
        return self._acks_db

    def put(self, records: Sequence[OutboxRecord]) -> int:
        """Commit ``records`` in one transaction (in order); return how many were new.

        Raises:
            OutboxWriteError: the database could not store them (disk full, I/O error, read-only). Nothing was
                stored.
        """
        if not records:
            return 0
        added = dict.fromkeys(RecordKind, 0)
        added_bytes = dict.fromkeys(RecordKind, 0)
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                for r in records:
                    cur = self.db.execute(
                        "INSERT OR IGNORE INTO outbox (record_id, kind, rank, topic, payload, qos, retain, "
                        "content_type, expiry_s, created_wall, schema, item_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (r.record_id, r.kind.value, int(r.kind.rank), r.topic, r.payload, r.qos, int(r.retain),
                         r.content_type, r.expiry_s, r.created_wall, r.schema, r.item_id),
                    )
                    added[r.kind] += cur.rowcount
                    added_bytes[r.kind] += len(r.payload) * cur.rowcount
                counts = {k: self._counts[k] + added[k] for k in RecordKind}
                sizes = {k: self._bytes[k] + added_bytes[k] for k in RecordKind}
                evicted, evicted_bytes = self._evict_locked(counts, sizes)
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback_locked()
                reason = storage_reason(exc, self.path)
                raise OutboxWriteError(f"outbox {self.path}: cannot store {len(records)} record(s) ({reason})",
                                       reason) from exc
            for kind in RecordKind:
                self._counts[kind] += added[kind] - evicted[kind]
                self._bytes[kind] += added_bytes[kind] - evicted_bytes[kind]
                self._evicted[kind] += evicted[kind]
        if self._on_put is not None:
            self._on_put()
        return sum(added.values())

    def is_over_bound(self, extra_records: int = 0, extra_bytes: int = 0) -> bool:
        """Would ``extra_records`` more records of ``extra_bytes`` take the outbox over a bound?"""
        with self._lock:
            over_records = sum(self._counts.values()) + extra_records > self.max_records
            over_bytes = self.max_bytes is not None and sum(self._bytes.values()) + extra_bytes > self.max_bytes
        return over_records or over_bytes

    def _evict_locked(self, counts: dict[RecordKind, int],
                      sizes: dict[RecordKind, int]) -> tuple[dict[RecordKind, int], dict[RecordKind, int]]:
        """Delete the oldest records over the bounds (module docstring); returns (count, bytes) per kind."""
        evicted = dict.fromkeys(RecordKind, 0)
        evicted_bytes = dict.fromkeys(RecordKind, 0)
        max_bytes = self.max_bytes if self.max_bytes is not None else float("inf")

        def over(record_bound: int) -> bool:
            total = sum(counts.values()) - sum(evicted.values())
            size = sum(sizes.values()) - sum(evicted_bytes.values())
            return total > record_bound or size > max_bytes

        for kind, record_bound in ((RecordKind.HEALTH, self.max_records), (RecordKind.IMAGE, self.max_records),
                                   (RecordKind.ITEM, _ITEM_BOUND_FACTOR * self.max_records)):
            if not over(record_bound) or counts[kind] == 0:
                continue
            doomed: list[int] = []
            after = 0
            while over(record_bound):
                rows = self.db.execute(
                    "SELECT seq, LENGTH(payload) FROM outbox WHERE rank = ? AND seq > ? ORDER BY seq LIMIT 200",
                    (int(kind.rank), after)).fetchall()
                if not rows:
                    break
                for seq, size in rows:
                    after = int(seq)
                    doomed.append(after)
                    evicted[kind] += 1
                    evicted_bytes[kind] += int(size)
                    if not over(record_bound):
                        break
            for start in range(0, len(doomed), 500):
                chunk = doomed[start:start + 500]
                self.db.execute(f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(chunk))})", chunk)
        if sum(evicted.values()):
            now = time.monotonic()
            if now >= self._next_eviction_log:  # one line a minute, not one per put during an outage
                self._next_eviction_log = now + 60.0
                totals = {k.value: self._evicted[k] + n for k, n in evicted.items() if self._evicted[k] + n}
                log.warning("outbox %s over its bound (%d records, %s bytes): evicting the oldest records; "
                            "evicted since start: %s", self.path, self.max_records, self.max_bytes, totals)
        alarms_over = over(self.max_records) and sum(counts.values()) - sum(evicted.values()) == counts[
            RecordKind.ALARM] + counts[RecordKind.ACTION]  # action records are never evicted either
        if alarms_over:
            self.over_bound = (f"outbox {self.path} holds {counts[RecordKind.ALARM]} alarms, over its bound: "
                               "alarms are never evicted")
            if not self._warned_over_bound:
                self._warned_over_bound = True
                log.warning("%s", self.over_bound)
        elif not over(self.max_records):
            self._warned_over_bound = False
            self.over_bound = None
        return evicted, evicted_bytes

    def _rollback_locked(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("ROLLBACK")

    def probe(self) -> None:
        """Commit a write that leaves nothing behind, to learn whether the file takes writes again.

        Raises:
            OutboxWriteError: it does not (disk still full, read-only, I/O error).
        """
        with self._lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("PRAGMA user_version=" + str(_SCHEMA_VERSION))
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback_locked()
                reason = storage_reason(exc)
                raise OutboxWriteError(f"outbox {self.path}: still cannot write ({reason})", reason) from exc

    def compact(self) -> None:
        """Fold the WAL into the database and truncate it: on a full disk this can give its space back (the WAL
        grows to about 4 MB before SQLite checkpoints it). Failures are ignored: it is only worth a try."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def fetch(self, after_seq: int, limit: int, exclude: frozenset[int] = frozenset()) -> list[StoredRecord]:
        """Up to ``limit`` records with ``seq > after_seq`` in order, skipping the seqs in ``exclude``."""
        with self._lock:
            try:
                rows = self.db.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit + len(exclude)),
                ).fetchall()
            except sqlite3.Error as exc:
                raise OutboxWriteError(f"outbox {self.path}: cannot read ({exc})", storage_reason(exc)) from exc
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
        """Delete acknowledged (or expired) records in one transaction; unknown seqs are ignored.

        Raises:
            OutboxWriteError: the delete could not be written (a full disk refuses even deletes in WAL mode);
                the records stay and may be sent again (subscribers de-duplicate by ``record_id``).
        """
        seq_list = list(seqs)
        if not seq_list:
            return 0
        removed = dict.fromkeys(RecordKind, 0)
        removed_bytes = dict.fromkeys(RecordKind, 0)
        # Same lock as put: two connections writing at once would meet in SQLite's busy handler, which sleeps
        # in milliseconds and cut the put rate by three in the benchmark.
        with self._lock:
            try:
                self.acks_db.execute("BEGIN IMMEDIATE")
                for start in range(0, len(seq_list), 500):
                    chunk = seq_list[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    for kind, size in self.acks_db.execute(
                        f"DELETE FROM outbox WHERE seq IN ({marks}) RETURNING kind, LENGTH(payload)", chunk
                    ).fetchall():
                        removed[RecordKind(kind)] += 1
                        removed_bytes[RecordKind(kind)] += int(size)
                self.acks_db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self.acks_db.execute("ROLLBACK")
                reason = storage_reason(exc)
                raise OutboxWriteError(f"outbox {self.path}: cannot delete acknowledged records ({reason})",
                                       reason) from exc
            for kind in RecordKind:
                self._counts[kind] -= removed[kind]
                self._bytes[kind] -= removed_bytes[kind]
            if self.over_bound is not None and sum(self._counts.values()) <= self.max_records and (
                    self.max_bytes is None or sum(self._bytes.values()) <= self.max_bytes):
                self.over_bound = None
                self._warned_over_bound = False
        return sum(removed.values())

    def backlog(self) -> OutboxBacklog:
        """Counts and bytes by kind (kept in memory), the age of the oldest record and eviction totals."""
        with self._lock:
            row = None
            if not self._closed:  # the last status report of a stopping service may ask after close()
                try:
                    row = self.db.execute("SELECT created_wall FROM outbox ORDER BY seq LIMIT 1").fetchone()
                except sqlite3.Error as exc:
                    log.warning("outbox %s: cannot read the oldest record (%s)", self.path, exc)
            counts = dict(self._counts)
            evicted = dict(self._evicted)
            size = sum(self._bytes.values())
        oldest = max(0.0, time.time() - float(row[0])) if row else 0.0
        return OutboxBacklog(
            alarm=counts[RecordKind.ALARM], item=counts[RecordKind.ITEM], image=counts[RecordKind.IMAGE],
            health=counts[RecordKind.HEALTH], oldest_age_s=oldest, evicted_item=evicted[RecordKind.ITEM],
            evicted_image=evicted[RecordKind.IMAGE], evicted_health=evicted[RecordKind.HEALTH], bytes=size,
        )

    def close(self) -> None:
        """Checkpoint the WAL and close; the file keeps whatever was not acknowledged."""
        with self._lock:
            self._closed = True
            with contextlib.suppress(sqlite3.Error):
                self.acks_db.close()
            try:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("outbox %s: checkpoint on close failed (%s)", self.path, exc)
            self.db.close()
