"""Everything the console reads and writes, as small typed operations over :class:`console.db.Tables`.

The MQTT threads call the ``ingest_*`` methods (one transaction each; a redelivered record changes nothing);
the web page calls the queries and ``add_verdict``/``reopen``; the verdict sender calls ``due_verdicts`` and
``mark_sent``. The store knows nothing of MQTT or HTTP: it takes parsed payloads and returns frozen views.
"""

from __future__ import annotations

import json
import math
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from console.db import ROLES, VERDICTS, Tables

ALARM_VERDICTS = ("alarm", "unscreened")
"""Box verdicts that need an operator: they enter the queue (and so does any verdict but ``clear`` the console does
not know: fail-safe)."""


class StoreError(Exception):
    """A request the store refuses (unknown item, verdict already given, unknown user); the message says why."""


class LastSupervisorError(StoreError):
    """A user change that would leave no active supervisor (the page answers 409): nobody could then manage users
    or re-open a verdict on the page, and only ``edge console add-user --role supervisor`` on the console machine
    would get them back."""


@dataclass(frozen=True, slots=True)
class ImageView:
    id: int
    label: str
    url: str


@dataclass(frozen=True, slots=True)
class ActionView:
    action: str | None
    outcome: str | None
    detail: str | None
    wall: float | None


@dataclass(frozen=True, slots=True)
class ItemView:
    """One item as the page shows it (the queue card and the history row)."""

    record_id: str
    prefix: str
    broker: str
    site_id: str
    scanner_id: str
    item_id: str
    box_verdict: str
    box_reason: str | None
    item_score: float | None
    reasons: tuple[str, ...]
    objects: tuple[dict[str, Any], ...]
    decided_wall: float | None
    received_wall: float
    verdict: str | None
    verdict_id: str | None
    verdict_wall: float | None
    operator: str | None
    verdict_state: str | None
    verdict_error: str | None
    images: tuple[ImageView, ...]
    actions: tuple[ActionView, ...]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LaneView:
    prefix: str
    broker: str
    site_id: str | None
    scanner_id: str | None
    state: str
    why: str
    status_wall: float | None
    health_wall: float | None
    links: tuple[dict[str, Any], ...]
    last_item_wall: float | None
    last_item_id: str | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class PendingVerdict:
    verdict_id: str
    broker: str
    topic: str
    payload: bytes
    sends: int


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one :meth:`ConsoleStore.prune` did: rows deleted, and the open alarms older than the cutoff it kept
    (they wait for an operator's verdict) with the time the oldest of them was received."""

    items: int
    images: int
    actions: int
    kept_open: int
    oldest_open_wall: float | None


@dataclass(frozen=True, slots=True)
class User:
    login: str
    role: str
    disabled: bool
    password_hash: str | None


def _reasons(payload: Mapping[str, Any]) -> list[str]:
    """Contract 2: the item's ``reasons`` codes; a payload from before it has none (``[]``)."""
    raw = payload.get("reasons")
    if not isinstance(raw, list):
        return []
    return sorted({str(r) for r in raw if isinstance(r, str)})


def _objects(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-object scores the card shows (label, scores, threshold, reasons), anomalous or alarming first.

    The payload is untrusted (anything on the broker's topic): every field is taken only if it has the expected
    type, numbers only if finite. A wrong type used to make the alarm a reject (never shown to an operator), and a
    NaN score made ``/api/items`` answer 500 for every operator while the item was in the queue.
    """
    out: list[dict[str, Any]] = []
    raw = payload.get("objects")
    for obj in raw if isinstance(raw, list) else []:
        if not isinstance(obj, dict):
            continue
        raw_reasons = obj.get("reasons")
        reasons = [r for r in raw_reasons if isinstance(r, dict)] if isinstance(raw_reasons, list) else []
        object_id = obj.get("object_id")
        out.append({
            "object_id": object_id if isinstance(object_id, int) and not isinstance(object_id, bool) else None,
            "label": _str_or_none(obj.get("label")),
            "detector_score": _float_or_none(obj.get("detector_score")),
            "anomaly_score": _float_or_none(obj.get("anomaly_score")),
            "threshold": _float_or_none(obj.get("threshold")), "anomalous": obj.get("anomalous") is True,
            "reasons": [{"kind": _str_or_none(r.get("kind")), "label": _str_or_none(r.get("label")),
                         "score": _float_or_none(r.get("score")), "threshold": _float_or_none(r.get("threshold"))}
                        for r in reasons],
        })
    out.sort(key=lambda o: (not (o["anomalous"] or o["reasons"]), -(o["anomaly_score"] or 0.0)))
    return out


def verdict_topic(prefix: str) -> str:
    """Contract 3: the box listens for verdicts on ``<box prefix>/verdicts``."""
    return f"{prefix}/verdicts"


class ConsoleStore:
    """The console's rows. Thread-safe: each call is one transaction on its own pooled connection."""

    def __init__(self, engine: Engine, tables: Tables) -> None:
        self.engine, self.t = engine, tables
        self._lane_seen: dict[str, dict[str, Any]] = {}  # the writer thread's, flushed with each batch

    # ---- intake (the MQTT writer thread; every call runs inside the caller's transaction ``conn``) ----

    def ingest_decision(self, conn: Connection, prefix: str, broker: str, payload: Mapping[str, Any], raw: str,
                        now: float) -> ItemView | None:
        """Store an item or alarm record; returns the item when it newly entered the queue (else None).

        The alarm record (``item_record_id`` set) and the item record of one item share one row, keyed by the
        item record id; whichever comes first creates it. A redelivery changes nothing.
        """
        is_alarm_record = "item_record_id" in payload
        key = str(payload["item_record_id"] if is_alarm_record else payload["record_id"])
        box_verdict = _text(payload.get("verdict") or "unscreened", 16)
        # fail-safe: only a CLEAR stays out of the queue; a verdict this console does not know (a newer box, a
        # typo, "ALARM") goes to the operator rather than nowhere
        alarm = box_verdict != "clear"
        image = payload.get("image")
        values = {
            "prefix": prefix, "broker": broker, "site_id": _text(payload.get("site_id"), 64),
            "scanner_id": _text(payload.get("scanner_id"), 64), "item_id": _text(payload.get("item_id"), 255),
            "box_verdict": box_verdict, "box_reason": _str_or_none(payload.get("reason"), 64),
            "item_score": _float_or_none(payload.get("item_score")), "reasons": json.dumps(_reasons(payload)),
            "decided_wall": _float_or_none(payload.get("decided_wall")), "is_alarm": alarm,
            "image_topic": _str_or_none(image.get("topic"), 512) if isinstance(image, dict) else None, "payload": raw,
        }
        t = self.t.items
        inserted = self._insert_new(conn, t, dict(
            record_id=key, received_wall=now, alarm_record_id=payload["record_id"] if is_alarm_record else None,
            **values))
        if not inserted:  # the other record of this item came first, or a redelivery
            if is_alarm_record:
                conn.execute(update(t).where(and_(t.c.record_id == key, t.c.alarm_record_id.is_(None)))
                             .values(alarm_record_id=payload["record_id"]))
            return None
        self._lane_seen[prefix] = {"broker": broker, "site_id": values["site_id"],
                                   "scanner_id": values["scanner_id"], "last_item_wall": now,
                                   "last_item_id": values["item_id"]}
        if not alarm:
            return None
        return self._view(conn, key)

    def flush_lanes(self, conn: Connection) -> None:
        """Write the lanes' last item, gathered over a batch by ``ingest_decision`` (one row update per lane and
        batch instead of one per item)."""
        seen, self._lane_seen = self._lane_seen, {}
        for prefix, values in seen.items():
            self._upsert_lane(conn, prefix, **values)

    def drop_pending(self) -> None:
        """Forget the lanes gathered for a batch that was rolled back."""
        self._lane_seen = {}

    @staticmethod
    def _insert_new(conn: Connection, table: Any, values: dict[str, Any]) -> bool:
        """INSERT unless the primary or unique key exists (one statement on SQLite and PostgreSQL); True if new."""
        from sqlalchemy.dialects import postgresql, sqlite

        statement: Any = (postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table))
        # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING
        key = next(iter(table.primary_key.columns))
        return conn.execute(statement.values(**values).on_conflict_do_nothing().returning(key)).first() is not None

    def _upsert_lane(self, conn: Connection, prefix: str, broker: str, **values: Any) -> None:
        lanes = self.t.lanes
        if not self._insert_new(conn, lanes, {"prefix": prefix, "broker": broker, **values}):
            conn.execute(update(lanes).where(lanes.c.prefix == prefix).values(broker=broker, **values))

    def ingest_image(self, conn: Connection, topic: str, prefix: str, rest: str, content: bytes,
                     now: float) -> list[ItemView]:
        """Store an overlay picture; returns the alarm items it belongs to (their cards show it now)."""
        key, _, suffix = rest.partition("/")
        if not self._insert_new(conn, self.t.images, dict(
                topic=topic, prefix=prefix, item_key=key, suffix=suffix, content_type="image/jpeg", content=content,
                received_wall=now)):
            return []  # a redelivery
        t = self.t.items
        ids = [r.record_id for r in conn.execute(
            select(t.c.record_id).where(t.c.image_topic == f"{prefix}/images/{key}").where(t.c.is_alarm.is_(True)))]
        return self.items(record_ids=ids, status="all", conn=conn) if ids else []

    def ingest_status(self, conn: Connection, prefix: str, broker: str, payload: Mapping[str, Any],
                      now: float) -> None:
        self._upsert_lane(conn, prefix, broker, site_id=_str_or_none(payload.get("site_id"), 64),
                          scanner_id=_str_or_none(payload.get("scanner_id"), 64),
                          status=_text(payload.get("state") or "unknown", 16),
                          status_reason=_text(payload.get("reason"), 1000), status_wall=now)

    def ingest_health(self, conn: Connection, prefix: str, broker: str, payload: Mapping[str, Any],
                      now: float) -> None:
        links = [{"name": _str_or_none(link.get("name")), "state": _str_or_none(link.get("state")),
                  "reason": _str_or_none(link.get("reason"), 1000)}
                 for link in payload.get("links") or [] if isinstance(link, dict)]
        self._upsert_lane(conn, prefix, broker, site_id=_str_or_none(payload.get("site_id"), 64),
                          scanner_id=_str_or_none(payload.get("scanner_id"), 64),
                          health_status=_str_or_none(payload.get("status"), 16),
                          health_reason=_str_or_none(payload.get("status_reason"), 1000), health_wall=now,
                          links=json.dumps(links))

    def ingest_action(self, conn: Connection, prefix: str, payload: Mapping[str, Any], now: float) -> ItemView | None:
        """Store a box action (contract 4); returns the item it belongs to, if the console has it."""
        record_id = payload.get("record_id")
        conn.execute(insert(self.t.actions).values(
            record_id=str(record_id) if record_id else None, prefix=prefix, item_id=payload.get("item_id"),
            action=payload.get("action"), outcome=payload.get("outcome"),
            detail=None if payload.get("detail") is None else str(payload.get("detail")),
            wall=_float_or_none(payload.get("wall")), received_wall=now))
        return self._view(conn, str(record_id)) if record_id else None

    def ingest_ack(self, conn: Connection, payload: Mapping[str, Any], now: float) -> ItemView | None:
        """A box acknowledged a verdict (contract 3); returns the item it is about, if the verdict is ours."""
        v = self.t.verdicts
        verdict_id = str(payload.get("verdict_id") or "")
        stored = payload.get("stored") is True
        row = conn.execute(select(v.c.record_id).where(v.c.verdict_id == verdict_id)).first()
        if row is None:
            return None
        conn.execute(update(v).where(v.c.verdict_id == verdict_id).values(
            state="acked" if stored else "refused", acked_wall=now,
            ack_error=None if stored else str(payload.get("error") or "the box did not store it")))
        return self._view(conn, str(row.record_id))

    def reject(self, conn: Connection, topic: str, broker: str, raw: bytes, error: str, now: float) -> None:
        conn.execute(insert(self.t.rejects).values(topic=topic, broker=broker, error=error, payload=raw,
                                                   received_wall=now))

    def _view(self, conn: Connection, record_id: str) -> ItemView | None:
        views = self.items(record_ids=[record_id], status="all", limit=1, conn=conn)
        return views[0] if views else None

    # ---- verdicts (web page, then the sender) ----

    def add_verdict(self, record_id: str, verdict: str, user: User, note: str | None, console_id: str,
                    address: str | None, now: float | None = None) -> tuple[str, ItemView]:
        """Record an operator's verdict and queue it for its box; returns (verdict_id, the updated item).

        Refused (StoreError) for an unknown item, an unknown verdict, or an item that already has one (a
        supervisor re-opens it first): two operators clicking the same card produce one verdict.
        """
        if verdict not in VERDICTS:
            raise StoreError(f"unknown verdict {verdict!r}; expected one of {', '.join(VERDICTS)}")
        now = time.time() if now is None else now
        verdict_id = str(uuid.uuid4())
        t, v = self.t.items, self.t.verdicts
        with self.engine.begin() as conn:
            item = conn.execute(select(t.c.prefix, t.c.broker, t.c.item_id, t.c.verdict)
                                .where(t.c.record_id == record_id)).first()
            if item is None:
                raise StoreError(f"no item with record id {record_id}")
            claimed = conn.execute(update(t).where(and_(t.c.record_id == record_id, t.c.verdict.is_(None)))
                                   .values(verdict=verdict, verdict_id=verdict_id, verdict_wall=now,
                                           operator=user.login))
            if claimed.rowcount != 1:
                raise StoreError(f"item {item.item_id} already has a verdict ({item.verdict})")
            body = {"schema": "verdict-1", "verdict_id": verdict_id, "record_id": record_id,
                    "item_id": item.item_id, "verdict": verdict, "operator": user.login, "role": user.role,
                    "decided_wall": now, "console_id": console_id}
            if note:
                body["note"] = note
            conn.execute(insert(v).values(
                verdict_id=verdict_id, record_id=record_id, prefix=item.prefix, broker=item.broker,
                item_id=item.item_id, verdict=verdict, operator=user.login, role=user.role, decided_wall=now,
                note=note or None, payload=json.dumps(body, separators=(",", ":")), state="pending", sends=0))
            self._audit(conn, user.login, "verdict", record_id, f"{verdict} {verdict_id}", address, now)
        view = self.item(record_id)
        assert view is not None
        return verdict_id, view

    def reopen(self, record_id: str, user: User, address: str | None) -> ItemView:
        """Supervisor only (the caller checks): the item's verdict is withdrawn and the item is back in the queue.

        The verdict already sent stays in the box's audit trail; the next verdict is a new one (new verdict_id).
        """
        t, v = self.t.items, self.t.verdicts
        now = time.time()
        with self.engine.begin() as conn:
            item = conn.execute(select(t.c.verdict_id).where(t.c.record_id == record_id)).first()
            if item is None or item.verdict_id is None:
                raise StoreError(f"item {record_id} has no verdict to re-open")
            conn.execute(update(v).where(v.c.verdict_id == item.verdict_id)
                         .values(reopened_by=user.login, reopened_wall=now))
            conn.execute(update(t).where(t.c.record_id == record_id)
                         .values(verdict=None, verdict_id=None, verdict_wall=None, operator=None))
            self._audit(conn, user.login, "reopen", record_id, f"withdrew {item.verdict_id}", address, now)
        view = self.item(record_id)
        assert view is not None
        return view

    def due_verdicts(self, now: float, resend_s: float, limit: int = 100,
                     brokers: Sequence[str] | None = None) -> list[PendingVerdict]:
        """Verdicts not acknowledged by their box: never sent, or sent more than ``resend_s`` ago; only those
        through ``brokers`` when given (the connected ones: the oldest ``limit`` verdicts of a site whose broker
        is down must not hold back every other site's)."""
        v = self.t.verdicts
        query = (select(v.c.verdict_id, v.c.broker, v.c.prefix, v.c.payload, v.c.sends)
                 .where(v.c.state.in_(("pending", "sent")))
                 .where(or_(v.c.last_sent_wall.is_(None), v.c.last_sent_wall <= now - resend_s))
                 .order_by(v.c.decided_wall).limit(limit))
        if brokers is not None:
            query = query.where(v.c.broker.in_(list(brokers)))
        with self.engine.connect() as conn:
            return [PendingVerdict(r.verdict_id, r.broker, verdict_topic(r.prefix), r.payload.encode(), r.sends)
                    for r in conn.execute(query)]

    def mark_sent(self, verdict_id: str, now: float) -> None:
        v = self.t.verdicts
        with self.engine.begin() as conn:
            conn.execute(update(v).where(and_(v.c.verdict_id == verdict_id, v.c.state.in_(("pending", "sent"))))
                         .values(state="sent", sends=v.c.sends + 1, last_sent_wall=now))

    def verdict_counts(self) -> dict[str, int]:
        v = self.t.verdicts
        with self.engine.connect() as conn:
            return {r.state: int(r.n) for r in conn.execute(select(v.c.state, func.count().label("n"))
                                                            .group_by(v.c.state))}

    # ---- queries (web page) ----

    def item(self, record_id: str) -> ItemView | None:
        found = self.items(record_ids=[record_id], status="all", limit=1)
        return found[0] if found else None

    def items(self, *, status: str = "open", site: str | None = None, lane: str | None = None,
              verdict: str | None = None, text: str | None = None, since: float | None = None,
              until: float | None = None, record_ids: Sequence[str] | None = None,
              limit: int = 200, conn: Connection | None = None) -> list[ItemView]:
        """Alarms (and UNSCREENED) for the queue (``open``: no verdict yet, oldest first) or the history
        (``decided``/``all``: newest first), filtered by site, lane (topic prefix), verdict and text."""
        t = self.t.items
        query = select(t)
        if record_ids is not None:
            query = query.where(t.c.record_id.in_(list(record_ids)))
        else:
            query = query.where(t.c.is_alarm.is_(True))
        if status == "open":
            query = query.where(t.c.verdict.is_(None)).order_by(t.c.received_wall)
        else:
            if status == "decided":
                query = query.where(t.c.verdict.is_not(None))
            query = query.order_by(t.c.received_wall.desc())
        if site:
            query = query.where(t.c.site_id == site)
        if lane:
            query = query.where(t.c.prefix == lane)
        if verdict:
            query = query.where(t.c.verdict == verdict)
        if text:
            like = f"%{text}%"
            query = query.where(or_(t.c.item_id.like(like), t.c.operator.like(like), t.c.reasons.like(like),
                                    t.c.record_id == text))
        if since is not None:
            query = query.where(t.c.received_wall >= since)
        if until is not None:
            query = query.where(t.c.received_wall < until)
        query = query.limit(max(1, min(limit, 1000)))
        if conn is not None:
            return self._views(conn, list(conn.execute(query)))
        with self.engine.connect() as own:
            return self._views(own, list(own.execute(query)))

    def _views(self, conn: Any, rows: list[Any]) -> list[ItemView]:
        if not rows:
            return []
        im, act, v = self.t.images, self.t.actions, self.t.verdicts
        keys = {(r.prefix, _image_key(r)) for r in rows}
        images: dict[tuple[str, str], list[Any]] = {}
        item_keys = sorted({k for _, k in keys})
        for start in range(0, len(item_keys), 500):  # bounded IN lists (SQLite's limits on expressions)
            for row in conn.execute(select(im.c.id, im.c.prefix, im.c.item_key, im.c.suffix)
                                    .where(im.c.item_key.in_(item_keys[start:start + 500]))
                                    .order_by(im.c.suffix)):
                if (row.prefix, row.item_key) in keys:
                    images.setdefault((row.prefix, row.item_key), []).append(row)
        ids = [r.record_id for r in rows]
        actions: dict[str, list[ActionView]] = {}
        for a in conn.execute(select(act).where(act.c.record_id.in_(ids)).order_by(act.c.id)):
            actions.setdefault(a.record_id, []).append(ActionView(a.action, a.outcome, a.detail, a.wall))
        vids = [r.verdict_id for r in rows if r.verdict_id]
        states = {s.verdict_id: (s.state, s.ack_error) for s in
                  conn.execute(select(v.c.verdict_id, v.c.state, v.c.ack_error).where(v.c.verdict_id.in_(vids)))}
        views = []
        for r in rows:
            payload = json.loads(r.payload)
            objects = _objects(payload)
            raw_objects = payload.get("objects")
            camera = isinstance(raw_objects, list) and any(
                o.get("polygon_camera") for o in raw_objects if isinstance(o, dict))
            state, error = states.get(r.verdict_id, (None, None))
            views.append(ItemView(
                record_id=r.record_id, prefix=r.prefix, broker=r.broker, site_id=r.site_id,
                scanner_id=r.scanner_id, item_id=r.item_id, box_verdict=r.box_verdict, box_reason=r.box_reason,
                item_score=r.item_score, reasons=tuple(json.loads(r.reasons)), objects=tuple(objects),
                decided_wall=r.decided_wall, received_wall=r.received_wall, verdict=r.verdict,
                verdict_id=r.verdict_id, verdict_wall=r.verdict_wall, operator=r.operator, verdict_state=state,
                verdict_error=error,
                images=tuple(ImageView(i.id, _image_label(i.suffix, camera), f"/images/{i.id}")
                             for i in images.get((r.prefix, _image_key(r)), [])),
                actions=tuple(actions.get(r.record_id, [])),
            ))
        return views

    def image(self, image_id: int) -> tuple[str, bytes] | None:
        im = self.t.images
        with self.engine.connect() as conn:
            row = conn.execute(select(im.c.content_type, im.c.content).where(im.c.id == image_id)).first()
        return None if row is None else (row.content_type, bytes(row.content))

    def lanes(self, now: float, stale_s: float = 60.0, prefix: str | None = None,
              conn: Connection | None = None) -> list[LaneView]:
        """Every box heard of (or the one of ``prefix``), with the state the page shows: online, degraded (and
        why) or offline."""
        lanes = self.t.lanes
        query = select(lanes).order_by(lanes.c.prefix)
        if prefix is not None:
            query = query.where(lanes.c.prefix == prefix)
        if conn is not None:
            rows = list(conn.execute(query))
        else:
            with self.engine.connect() as own:
                rows = list(own.execute(query))
        out = []
        for r in rows:
            links = tuple(json.loads(r.links)) if r.links else ()
            state, why = _lane_state(r, links, now, stale_s)
            out.append(LaneView(r.prefix, r.broker, r.site_id, r.scanner_id, state, why, r.status_wall,
                                r.health_wall, links, r.last_item_wall, r.last_item_id))
        return out

    def sites(self) -> list[str]:
        lanes = self.t.lanes
        with self.engine.connect() as conn:
            return sorted({r.site_id for r in conn.execute(select(lanes.c.site_id)) if r.site_id})

    def counts(self) -> dict[str, int]:
        t = self.t.items
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(t)).scalar_one()
            open_ = conn.execute(select(func.count()).select_from(t)
                                 .where(and_(t.c.is_alarm.is_(True), t.c.verdict.is_(None)))).scalar_one()
            images = conn.execute(select(func.count()).select_from(self.t.images)).scalar_one()
            rejects = conn.execute(select(func.count()).select_from(self.t.rejects)).scalar_one()
        return {"items": int(total), "open": int(open_), "images": int(images), "rejects": int(rejects)}

    def _open(self) -> Any:
        """An item that needs an operator: an alarm (or UNSCREENED, or a verdict the console does not know) without
        a verdict (never given, or withdrawn by a re-open)."""
        t = self.t.items
        return and_(t.c.is_alarm.is_(True), t.c.verdict.is_(None))

    def open_alarms_before(self, before_wall: float, conn: Connection | None = None) -> dict[str, tuple[int, float]]:
        """Per lane (topic prefix): how many open alarms were received before ``before_wall``, and the oldest one's
        received time. The page and the prune's log say these: alarms nobody reviewed within ``keep_days``."""
        t = self.t.items
        query = (select(t.c.prefix, func.count().label("n"), func.min(t.c.received_wall).label("oldest"))
                 .where(and_(self._open(), t.c.received_wall < before_wall)).group_by(t.c.prefix))
        if conn is not None:
            rows = list(conn.execute(query))
        else:
            with self.engine.connect() as own:
                rows = list(own.execute(query))
        return {r.prefix: (int(r.n), float(r.oldest)) for r in rows}

    def prune(self, before_wall: float) -> Pruned:
        """Delete decisions, images and actions received before ``before_wall`` (verdicts and audit stay), except
        an item that still needs an operator's verdict, with its pictures and actions.

        Why: retention used to delete open alarms too, so an alarm left in the queue over a long shutdown left the
        queue without anyone deciding it. An open item stays however old; once decided (its received time is past
        the cutoff) the next prune deletes it, like every decided and CLEAR item.
        """
        t, act = self.t.items, self.t.actions
        with self.engine.begin() as conn:
            items = conn.execute(delete(t).where(and_(
                t.c.received_wall < before_wall, or_(t.c.is_alarm.is_(False), t.c.verdict.is_not(None))))).rowcount
            opened = select(t.c.record_id).where(and_(t.c.record_id == act.c.record_id, self._open()))
            actions = conn.execute(delete(act).where(and_(act.c.received_wall < before_wall,
                                                          ~opened.exists()))).rowcount
            images = self._prune_images(conn, before_wall)
            e = self.t.ended_sessions
            conn.execute(delete(e).where(e.c.until_wall < time.time()))
            kept = self.open_alarms_before(before_wall, conn)
        return Pruned(int(items or 0), images, int(actions or 0), sum(n for n, _ in kept.values()),
                      min((oldest for _, oldest in kept.values()), default=None))

    def _prune_images(self, conn: Connection, before_wall: float) -> int:
        """Delete pictures received before ``before_wall`` but those of open items (any age: a picture may come in
        just before its item's record). Which pictures belong to an item is decided as the page decides it
        (:func:`_image_key`), so in Python; the deletes run on id ranges between the kept pictures (no statement
        holds a list of ids whatever the number of open alarms)."""
        t, im = self.t.items, self.t.images
        keep = {(r.prefix, _image_key(r)) for r in conn.execute(
            select(t.c.prefix, t.c.item_id, t.c.image_topic).where(self._open()))}
        keys = sorted({key for _, key in keep})
        kept: list[int] = []
        for start in range(0, len(keys), 500):  # bounded IN lists, as in _views
            kept += [r.id for r in conn.execute(
                select(im.c.id, im.c.prefix, im.c.item_key).where(and_(
                    im.c.received_wall < before_wall, im.c.item_key.in_(keys[start:start + 500]))))
                if (r.prefix, r.item_key) in keep]
        edges: list[int | None] = [None, *sorted(kept), None]
        deleted = 0
        for low, high in pairwise(edges):
            if low is not None and high is not None and high - low <= 1:
                continue
            where = [im.c.received_wall < before_wall]
            if low is not None:
                where.append(im.c.id > low)
            if high is not None:
                where.append(im.c.id < high)
            deleted += int(conn.execute(delete(im).where(and_(*where))).rowcount or 0)
        return deleted

    # ---- users and who-did-what ----

    def add_user(self, login: str, password_hash: str | None, role: str, by: str) -> None:
        if role not in ROLES:
            raise StoreError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        if not login or len(login) > 64 or not login.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise StoreError("a login is 1-64 letters, digits, '-', '_' or '.'")
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(self.t.users).values(login=login, password_hash=password_hash, role=role,
                                                         disabled=False, created_wall=time.time(), created_by=by))
                self._audit(conn, by, "user_add", login, role, None, time.time())
        except IntegrityError as exc:
            raise StoreError(f"user {login!r} exists already") from exc

    def set_password(self, login: str, password_hash: str, by: str) -> None:
        self._change_user(login, by, "user_password", "", password_hash=password_hash)

    def set_role(self, login: str, role: str, by: str) -> None:
        if role not in ROLES:
            raise StoreError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        self._change_user(login, by, "user_role", role, role=role)

    def set_disabled(self, login: str, disabled: bool, by: str) -> None:
        self._change_user(login, by, "user_disable" if disabled else "user_enable", "", disabled=disabled)

    def _change_user(self, login: str, by: str, action: str, detail: str, **values: Any) -> None:
        """Change one user; refused (:class:`LastSupervisorError`) when it would leave no active supervisor.

        The check and the change are one serialised step: the users table is locked for writing first (SQLite:
        the database's write lock; PostgreSQL: ``LOCK TABLE ... SHARE ROW EXCLUSIVE``, which lets sign-ins read
        on). Checked and changed separately, two supervisors demoting each other at the same moment would each see
        the other still active, and both changes would go through.
        """
        u = self.t.users
        now = time.time()
        with self.engine.begin() as conn:
            self._lock_users(conn, login)
            row = conn.execute(select(u.c.role, u.c.disabled).where(u.c.login == login)).first()
            if row is None:
                raise StoreError(f"no user {login!r}")
            active = row.role == "supervisor" and not row.disabled
            stays = values.get("role", row.role) == "supervisor" and not values.get("disabled", row.disabled)
            if active and not stays and not conn.execute(
                    select(func.count()).select_from(u).where(and_(
                        u.c.login != login, u.c.role == "supervisor", u.c.disabled.is_(False)))).scalar_one():
                change = "demoting" if "role" in values else "disabling"
                raise LastSupervisorError(
                    f"{login} is the last active supervisor: {change} them would leave nobody to manage users; "
                    "make another user supervisor (or enable one) first")
            conn.execute(update(u).where(u.c.login == login).values(**values))
            if "password_hash" in values or values.get("disabled"):
                self._end_sessions_of(conn, login, now)  # the user signs in again (with the new password)
            self._audit(conn, by, action, login, detail, None, now)

    def _lock_users(self, conn: Connection, login: str) -> None:
        """Take the write lock on the users table for the rest of ``conn``'s transaction (see ``_change_user``).

        SQLite: the Python driver opens the transaction at the first write, so the first statement is one (it
        rewrites ``login``'s login unchanged; SQLite waits ``busy_timeout`` for another writer). PostgreSQL: a
        table lock that conflicts with every other change of a user but not with reads.
        """
        u = self.t.users
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f'LOCK TABLE "{u.name}" IN SHARE ROW EXCLUSIVE MODE')
        else:
            conn.execute(update(u).where(u.c.login == login).values(login=u.c.login))

    def user(self, login: str) -> User | None:
        u = self.t.users
        with self.engine.connect() as conn:
            row = conn.execute(select(u).where(u.c.login == login)).first()
        return None if row is None else User(row.login, row.role, bool(row.disabled), row.password_hash)

    def users(self) -> list[User]:
        u = self.t.users
        with self.engine.connect() as conn:
            return [User(r.login, r.role, bool(r.disabled), None) for r in conn.execute(select(u).order_by(u.c.login))]

    def end_session(self, sid: str, until_wall: float) -> None:
        """Sign-out: the session ``sid`` is refused from now on (its cookie may still be valid until
        ``until_wall``, when the row is pruned)."""
        with self.engine.begin() as conn:
            self._insert_new(conn, self.t.ended_sessions, {"sid": sid, "until_wall": until_wall})

    def session_ended(self, sid: str, login: str, issued: float) -> bool:
        """The session was signed out, or its user's password changed or the user was disabled after ``issued``."""
        e, u = self.t.ended_sessions, self.t.user_sessions_ended
        with self.engine.connect() as conn:
            if conn.execute(select(e.c.sid).where(e.c.sid == sid)).first() is not None:
                return True
            before = conn.execute(select(u.c.before_wall).where(u.c.login == login)).scalar()
        return before is not None and issued <= float(before)

    def _end_sessions_of(self, conn: Connection, login: str, now: float) -> None:
        u = self.t.user_sessions_ended
        if not self._insert_new(conn, u, {"login": login, "before_wall": now}):
            conn.execute(update(u).where(u.c.login == login).values(before_wall=now))

    def audit(self, login: str, action: str, target: str | None, detail: str | None, address: str | None) -> None:
        with self.engine.begin() as conn:
            self._audit(conn, login, action, target, detail, address, time.time())

    def _audit(self, conn: Any, login: str, action: str, target: str | None, detail: str | None,
               address: str | None, now: float) -> None:
        conn.execute(insert(self.t.audit).values(wall=now, login=login, action=action, target=target,
                                                 detail=detail, address=address))

    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]:
        a = self.t.audit
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(a).order_by(a.c.id.desc()).limit(limit))]

    def setting(self, key: str, make: Any = lambda: secrets.token_urlsafe(48)) -> str:
        """A stored setting (the session signing key), made once and kept across restarts and processes."""
        s = self.t.settings
        with self.engine.begin() as conn:
            row = conn.execute(select(s.c.value).where(s.c.key == key)).first()
            if row is not None:
                return str(row.value)
        value = str(make())
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(s).values(key=key, value=value))
        except IntegrityError:
            pass
        with self.engine.connect() as conn:
            return str(conn.execute(select(s.c.value).where(s.c.key == key)).scalar_one())


_UNSAFE = str.maketrans({"/": "_", "+": "_", "#": "_", "\0": "_"})


def _float_or_none(value: Any) -> float | None:
    """A finite number, else None (NaN and Infinity parse as JSON in Python but cannot be answered as JSON)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if math.isfinite(number) else None


def _str_or_none(value: Any, limit: int = 255) -> str | None:
    """A string field of an untrusted payload, without NUL characters (PostgreSQL refuses them in text: the
    whole ALARM became a reject) and cut to ``limit`` characters; None when it is not a string."""
    return value.replace("\x00", "")[:limit] if isinstance(value, str) else None


def _text(value: Any, limit: int) -> str:
    """A field shown as text whatever it holds (``str`` of it), as :func:`_str_or_none` cleans strings."""
    return str(value or "").replace("\x00", "")[:limit]


def _image_key(row: Any) -> str:
    """The item's level of its image topic: the published topic if known, else the box's rule for item ids."""
    if row.image_topic and "/images/" in row.image_topic:
        return str(row.image_topic.split("/images/", 1)[1].split("/", 1)[0])
    return str(row.item_id).translate(_UNSAFE) or "_"


def _image_label(suffix: str, camera: bool) -> str:
    if suffix:
        return {"camera": "exit camera", "xray": "X-ray"}.get(suffix, suffix)
    return "exit camera overlay" if camera else "X-ray overlay"


def _lane_state(row: Any, links: Sequence[Mapping[str, Any]], now: float, stale_s: float) -> tuple[str, str]:
    """online / degraded / offline and why, from the retained status, the last health and link states."""
    status = row.status or row.health_status or "unknown"
    why = row.status_reason or row.health_reason or ""
    if status == "offline":
        return "offline", why or "the box's last will: it lost its broker connection"
    if row.health_status == "degraded" and status == "online":
        status, why = "degraded", row.health_reason or why
    bad = [(f"{link.get('name')} {link.get('state')}", str(link.get("reason") or "")) for link in links
           if link.get("state") not in ("up", "disabled")]
    if bad and status == "online":
        status = "degraded"
    if bad:  # the links say why; the status reason only when it is not one of theirs
        parts = [why] if why and all(reason != why for _, reason in bad) else []
        why = "; ".join(parts + [f"{label} ({reason})" if reason else label for label, reason in bad])
    if row.health_wall is not None and now - row.health_wall > stale_s and status != "offline":
        status, why = "degraded", f"no health for {now - row.health_wall:.0f} s" + (f"; {why}" if why else "")
    return status, why
