"""The actions store: every action the box owes the lane, on disk until it is done and reported.

One SQLite file (``actions.state_file``, default ``actions.sqlite3`` beside the intake journal; WAL,
``synchronous=FULL``), one row per (item uid, action)::

    pending ──(acked / too late / refused / window over)──► outcome, reported 0 ──(audit + MQTT)──► reported 1

Why a store of its own and not the intake journal: the journal forgets an item as soon as every sink has stored
its decision, which is long before its parcel reaches the diverter. The actions sink "stores" a decision by
writing its pending rows here, so the journal may forget the item, and a service killed while a divert is
pending finds the row at the next start: re-sent if the parcel can still be diverted, else reported
``missed_divert``. A decision offered twice (the journal re-publishes decisions written ahead of a crash) finds
its rows and adds nothing: ``INSERT OR IGNORE`` on the key.

Finished rows are kept for ``KEEP_S`` (an operator's verdict may release a diverted parcel minutes later), then
deleted. Thread-safe; every write is one transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from edge.actions.records import ActionKind, Outcome

KEEP_S = 7 * 86400.0
"""Finished rows are kept this long (for releases and to rewrite an item's actions file), then deleted."""

_DDL = """
CREATE TABLE IF NOT EXISTS actions (
    uid            TEXT NOT NULL,
    action         TEXT NOT NULL,
    item_id        TEXT,
    record_id      TEXT,
    alarm_record_id TEXT,
    wire_id        INTEGER,
    gate           INTEGER,
    deadline_count INTEGER,
    window_end_wall REAL NOT NULL,
    decided_wall   REAL NOT NULL,
    created_wall   REAL NOT NULL,
    outcome        TEXT,
    detail         TEXT NOT NULL DEFAULT '',
    done_wall      REAL,
    reported       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (uid, action)
);
CREATE INDEX IF NOT EXISTS actions_record ON actions (record_id);
CREATE INDEX IF NOT EXISTS actions_alarm_record ON actions (alarm_record_id);
"""

_COLUMNS = ("uid", "action", "item_id", "record_id", "alarm_record_id", "wire_id", "gate", "deadline_count",
            "window_end_wall", "decided_wall", "created_wall", "outcome", "detail", "done_wall", "reported")


_INSERT = f"INSERT OR IGNORE INTO actions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


@dataclass(frozen=True, slots=True)
class ActionRow:
    """One action owed (``outcome`` None) or done, as stored.

    Attributes:
        uid: the item's uid (``Decision.item_uid``), or ``fault-...`` for a belt stop on a fault.
        action: what.
        item_id, record_id, alarm_record_id: the item and its item and alarm record ids (None for faults).
        wire_id, gate: the firmware's item id and the diverter gate (divert, release).
        deadline_count: encoder count by which the firmware must have the command (divert only).
        window_end_wall: until when the box keeps trying when there is no belt deadline (beacon, belt stop,
            release), and the wall-clock backstop of a divert.
        decided_wall: when the item was decided (the day folder of its audit record).
        created_wall: when the action was queued.
        outcome, detail, done_wall: how it ended (None while pending).
        reported: True once in the audit store and the MQTT outbox.
    """

    uid: str
    action: ActionKind
    item_id: str | None
    record_id: str | None
    alarm_record_id: str | None
    wire_id: int | None
    gate: int | None
    deadline_count: int | None
    window_end_wall: float
    decided_wall: float
    created_wall: float
    outcome: Outcome | None = None
    detail: str = ""
    done_wall: float | None = None
    reported: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return self.uid, self.action.value


def _row(values: tuple[object, ...]) -> ActionRow:
    d = dict(zip(_COLUMNS, values, strict=True))
    return ActionRow(
        uid=str(d["uid"]), action=ActionKind(str(d["action"])), item_id=d["item_id"],  # type: ignore[arg-type]
        record_id=d["record_id"], alarm_record_id=d["alarm_record_id"],  # type: ignore[arg-type]
        wire_id=d["wire_id"], gate=d["gate"], deadline_count=d["deadline_count"],  # type: ignore[arg-type]
        window_end_wall=float(d["window_end_wall"]), decided_wall=float(d["decided_wall"]),  # type: ignore[arg-type]
        created_wall=float(d["created_wall"]),  # type: ignore[arg-type]
        outcome=None if d["outcome"] is None else Outcome(str(d["outcome"])), detail=str(d["detail"]),
        done_wall=None if d["done_wall"] is None else float(d["done_wall"]),  # type: ignore[arg-type]
        reported=bool(d["reported"]))


class ActionStore:
    """SQLite store of actions; see the module docstring.

    Raises:
        sqlite3.Error, OSError: from every method when the file cannot be written (the sink turns this into a
            ``PublishError``, so the pipeline keeps the decision and asks again).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_DDL)

    def add(self, rows: list[ActionRow]) -> list[ActionRow]:
        """Queue ``rows`` in one transaction; returns those that were new (a row already there is left as is)."""
        added = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for r in rows:
                    cur = self._db.execute(_INSERT,
                        (r.uid, r.action.value, r.item_id, r.record_id, r.alarm_record_id, r.wire_id, r.gate,
                         r.deadline_count, r.window_end_wall, r.decided_wall, r.created_wall,
                         None if r.outcome is None else r.outcome.value, r.detail, r.done_wall, int(r.reported)))
                    if cur.rowcount:
                        added.append(r)
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
        return added

    def finish(self, row: ActionRow, outcome: Outcome, detail: str, now_wall: float) -> ActionRow:
        """Record how a pending action ended; returns the finished row."""
        with self._lock:
            self._db.execute("UPDATE actions SET outcome = ?, detail = ?, done_wall = ? WHERE uid = ? AND action = ?",
                             (outcome.value, detail, now_wall, *row.key))
        return replace(row, outcome=outcome, detail=detail, done_wall=now_wall)

    def mark_reported(self, row: ActionRow) -> None:
        with self._lock:
            self._db.execute("UPDATE actions SET reported = 1 WHERE uid = ? AND action = ?", row.key)

    def _select(self, where: str, args: tuple[object, ...] = ()) -> list[ActionRow]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM actions WHERE {where} ORDER BY rowid",
                                    args).fetchall()
        return [_row(tuple(r)) for r in rows]

    def pending(self) -> list[ActionRow]:
        """Actions not done yet, oldest first (at start: what a killed run left)."""
        return self._select("outcome IS NULL")

    def unreported(self) -> list[ActionRow]:
        """Finished actions not yet in the audit store and the outbox."""
        return self._select("outcome IS NOT NULL AND reported = 0")

    def finished_for(self, uid: str) -> list[ActionRow]:
        """Every finished action of one item (its actions file lists them all)."""
        return self._select("uid = ? AND outcome IS NOT NULL", (uid,))

    def divert_of(self, record_id: str) -> ActionRow | None:
        """The divert of the item whose item or alarm record id is ``record_id`` (an operator names either)."""
        found = self._select("action = ? AND (record_id = ? OR alarm_record_id = ?)",
                             (ActionKind.DIVERT.value, record_id, record_id))
        return found[0] if found else None

    def forget_older_than(self, wall: float) -> int:
        """Delete finished, reported rows done before ``wall``; returns how many."""
        with self._lock:
            cur = self._db.execute("DELETE FROM actions WHERE reported = 1 AND done_wall < ?", (wall,))
        return int(cur.rowcount)

    def prune(self) -> int:
        return self.forget_older_than(time.time() - KEEP_S)

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()
