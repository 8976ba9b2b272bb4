"""The intake journal: which accepted items still owe a decision, durably, so a crash at any instant loses none.

An item's life on disk, in one small SQLite file beside the outbox (``synchronous=FULL``: a committed row
survives power loss)::

    accepted ──(decision made)──► deciding ──(every sink stored it, source acknowledged)──► row deleted

* ``accepted`` is written when the pipeline takes the item from its source, before any stage runs. The source
  keeps the item (the spool file stays in the spool) until the row is gone.
* ``deciding`` is written ahead of the sinks, with the whole decision (write-ahead): a crash while the sinks
  store it is repaired at the next start by storing the *same* decision again. Sinks are idempotent by record id,
  so the subscriber sees it once.
* At start, ``accepted`` rows are items the box took but never decided: they are decided UNSCREENED ``restart``
  (the parcel has left the tunnel; re-screening it minutes later would act on a belt that moved on), and
  ``deciding`` rows are re-published. Either way the source is then acknowledged, so nothing is screened twice.

A journal that cannot write (disk full, read-only) must not stop screening: ``problem`` says why, the pipeline
reports itself degraded, and items are still decided (only the crash guarantee is lost until it writes again).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from edge.records import (
    AlarmReason,
    BoxXyxy,
    Decision,
    ItemMeta,
    ModelRef,
    ObjectPart,
    ObjectResult,
    ReasonKind,
    UnscreenedReason,
    Verdict,
)

log = logging.getLogger(__name__)

_DDL = """
CREATE TABLE IF NOT EXISTS intake (
    uid        TEXT PRIMARY KEY,
    item_id    TEXT NOT NULL,
    source_ref TEXT,
    meta       TEXT NOT NULL,
    decision   TEXT,
    overlay    BLOB
);
"""


@dataclass(frozen=True, slots=True)
class Leftover:
    """An item found in the journal at start: accepted before a crash, with its decision if one was made."""

    meta: ItemMeta
    source_ref: str | None
    decision: Decision | None


def _points(raw: Any) -> tuple[tuple[float, float], ...]:
    return tuple((float(x), float(y)) for x, y in raw)


def _maybe_points(raw: Any) -> tuple[tuple[float, float], ...] | None:
    return None if raw is None else _points(raw)


def _plain(value: Any) -> Any:
    """``dataclasses.asdict`` without its deep copy of every leaf (the records are frozen and the result only goes
    to ``json.dumps``, which writes a tuple as a list): nested records become dicts in field order, a tuple of
    records a list of dicts, and anything else (numbers, text, outlines of point pairs) goes to ``json.dumps`` as it
    is. Same JSON text; asdict walked and copied every point of every outline. A record inside a tuple that does
    not start with one is not converted, and ``json.dumps`` then raises rather than writing it wrongly."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)) and value and (is_dataclass(value[0]) or isinstance(value[0], dict)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def decision_to_json(decision: Decision) -> str:
    """The decision without its overlay (stored apart as a blob), as JSON."""
    body = {f.name: _plain(getattr(decision, f.name)) for f in fields(decision) if f.name != "overlay_jpeg"}
    return json.dumps(body)


def _reasons(raw: Any) -> tuple[AlarmReason, ...]:
    """Alarm reasons or signals; a row written before they existed has none."""
    return tuple(AlarmReason(ReasonKind(r["kind"]), r["label"], r["score"], r["threshold"]) for r in raw or ())


def decision_from_json(text: str, overlay: bytes | None) -> Decision:
    """Inverse of :func:`decision_to_json`."""
    body = json.loads(text)
    objects = tuple(
        ObjectResult(
            object_id=o["object_id"], box=BoxXyxy(**o["box"]), label=o["label"],
            detector_score=o["detector_score"], anomaly_score=o["anomaly_score"], threshold=o["threshold"],
            anomalous=o["anomalous"], polygon_xray=_points(o["polygon_xray"]),
            polygon_camera=_maybe_points(o["polygon_camera"]),
            parts=tuple(ObjectPart(_points(p["polygon_xray"]), p["score"], p["anomalous"],
                                   _maybe_points(p["polygon_camera"])) for p in o["parts"]),
            reasons=_reasons(o.get("reasons")), classifier_score=o.get("classifier_score"),
            classifier_threshold=o.get("classifier_threshold"), signals=_reasons(o.get("signals")),
        )
        for o in body.pop("objects")
    )
    models = tuple(ModelRef(**m) for m in body.pop("models"))
    reason = body.pop("reason")
    verdict = Verdict(body.pop("verdict"))
    return Decision(**body, verdict=verdict, reason=None if reason is None else UnscreenedReason(reason),
                    objects=objects, models=models, overlay_jpeg=overlay)


class IntakeJournal:
    """SQLite journal of accepted, not yet acknowledged items. Thread-safe; every write is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.problem: str | None = None
        """Why the journal cannot write now (None when it can): the crash guarantee is off until it can."""
        self._open()

    def _open(self) -> bool:
        if self._db is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_DDL)
        except (sqlite3.Error, OSError) as exc:
            self._fail("open", exc)
            return False
        self._db = db
        return True

    def _fail(self, what: str, exc: BaseException) -> None:
        text = f"intake journal {self.path} cannot {what} ({exc}); items are screened but a crash now could lose them"
        if self.problem is None:
            log.error("intake journal failing", extra={"path": str(self.path), "error": str(exc)})
        self.problem = text

    def _write(self, what: str, sql: str, args: tuple[Any, ...]) -> bool:
        with self._lock:
            if not self._open():
                return False
            assert self._db is not None
            try:
                self._db.execute(sql, args)
            except sqlite3.Error as exc:
                self._fail(what, exc)
                return False
            if self.problem is not None:
                log.info("intake journal writing again", extra={"path": str(self.path)})
                self.problem = None
            return True

    def accept(self, meta: ItemMeta, source_ref: str | None) -> bool:
        """Record that ``meta`` was taken from its source (before any stage runs); False if not stored."""
        return self._write("record an accepted item",
                           "INSERT OR REPLACE INTO intake (uid, item_id, source_ref, meta) VALUES (?, ?, ?, ?)",
                           (meta.uid, meta.item_id, source_ref, json.dumps(asdict(meta))))

    def deciding(self, decision: Decision) -> bool:
        """Write the decision ahead of the sinks, so a crash while they store it repeats this very decision."""
        return self._write("record a decision",
                           "UPDATE intake SET decision = ?, overlay = ? WHERE uid = ?",
                           (decision_to_json(decision), decision.overlay_jpeg, decision.item_uid))

    def done(self, uid: str) -> bool:
        """Forget an item: its decision is stored by every sink and its source acknowledged."""
        return self._write("forget a finished item", "DELETE FROM intake WHERE uid = ?", (uid,))

    def leftovers(self) -> list[Leftover]:
        """Items accepted by an earlier run and not finished (at start, before intake)."""
        with self._lock:
            if not self._open():
                return []
            assert self._db is not None
            try:
                rows = self._db.execute("SELECT meta, source_ref, decision, overlay FROM intake ORDER BY rowid")
                found = rows.fetchall()
            except sqlite3.Error as exc:
                self._fail("read", exc)
                return []
        out = []
        for meta_text, ref, decision_text, overlay in found:
            try:
                meta = ItemMeta(**json.loads(meta_text))
                decision = None if decision_text is None else decision_from_json(decision_text, overlay)
            except (ValueError, TypeError, KeyError) as exc:
                log.error("intake journal row unreadable; skipped", extra={"error": str(exc)})
                continue
            out.append(Leftover(meta, ref, decision))
        return out

    def pending(self) -> int:
        """Rows in the journal (for tests and health)."""
        with self._lock:
            if self._db is None:
                return 0
            try:
                return int(self._db.execute("SELECT COUNT(*) FROM intake").fetchone()[0])
            except sqlite3.Error:
                return 0

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
