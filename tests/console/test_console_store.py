"""The console's store on its real databases (SQLite and PostgreSQL) with payloads no box sends but anyone on the
broker can: what the store keeps of them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_helpers import make_database
from sqlalchemy import select, update

from console.config import DatabaseConfig
from console.db import Tables, create_tables, drop_tables, open_engine
from console.store import ConsoleStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConsoleStore]:
    db = make_database(request.param, tmp_path)
    engine = open_engine(DatabaseConfig(url=db.url, table_prefix=db.prefix))
    tables = Tables(db.prefix)
    create_tables(engine, tables)
    yield ConsoleStore(engine, tables)
    drop_tables(engine, tables)
    engine.dispose()


def test_nul_characters_do_not_keep_an_alarm_out_of_the_queue(store: ConsoleStore) -> None:
    """PostgreSQL refuses NUL in text columns: an ALARM whose item id or reason held one became a reject there
    (on SQLite it was stored), and no operator saw it."""
    body = {"record_id": "r-nul", "site_id": "s\x00", "scanner_id": "l1", "item_id": "bag\x00-1",
            "verdict": "alarm", "reason": "why\x00"}
    with store.engine.begin() as conn:
        view = store.ingest_decision(conn, "xray/s/l1", "b", body, json.dumps(body), time.time())
        store.ingest_status(conn, "xray/s/l1", "b", {"state": "online\x00", "reason": "\x00"}, time.time())
    assert view is not None and view.item_id == "bag-1" and view.site_id == "s" and view.box_reason == "why"
    assert [v.record_id for v in store.items(status="open")] == ["r-nul"]


def test_a_site_whose_broker_is_down_does_not_hold_back_the_other_sites_verdicts(tmp_path: Path) -> None:
    """The sender took the 100 oldest due verdicts, whatever their broker: with 100 waiting for a site whose
    broker was down, no verdict reached any other site until it came back. Only connected brokers' are taken."""
    import uuid

    from publish_helpers import free_port

    from console.config import BrokerConfig, ConsoleConfig
    from console.intake import VerdictSender, Writer, open_links
    from console.store import User

    db = make_database("sqlite", tmp_path)
    engine = open_engine(DatabaseConfig(url=db.url, table_prefix=db.prefix))
    tables = Tables(db.prefix)
    create_tables(engine, tables)
    store = ConsoleStore(engine, tables)
    site = f"v{uuid.uuid4().hex[:6]}"
    config = ConsoleConfig(console_id=f"c-{site}", brokers=(
        BrokerConfig(name="up", port=1883, topics=(f"xray/{site}/none/#",), client_id=f"c-{site}-up"),
        BrokerConfig(name="down", port=free_port(), topics=(f"xray/{site}/none/#",))))
    links = open_links(config, store, Writer(store, lambda kind, data: None))
    user = User("olga", "operator", False, None)
    now = time.time()
    with engine.begin() as conn:
        for n in range(101):
            body = {"record_id": f"r-down-{n}", "item_id": f"bag-{n}", "verdict": "alarm"}
            store.ingest_decision(conn, f"xray/{site}/b", "down", body, json.dumps(body), now - 100 + n)
        body = {"record_id": "r-up", "item_id": "bag-up", "verdict": "alarm"}
        store.ingest_decision(conn, f"xray/{site}/a", "up", body, json.dumps(body), now)
    for n in range(101):
        store.add_verdict(f"r-down-{n}", "cleared", user, None, "c", None, now=now - 100 + n)
    up_id, _ = store.add_verdict("r-up", "cleared", user, None, "c", None, now=now)
    for link in links.values():
        link.start()
    try:
        assert links["up"].connected.wait(10)
        assert VerdictSender(store, links, 10.0).send_due(time.time()) == 1
        assert store.verdict_counts() == {"pending": 101, "sent": 1}
        v = tables.verdicts
        with engine.connect() as conn:
            assert conn.execute(select(v.c.state).where(v.c.verdict_id == up_id)).scalar_one() == "sent"
    finally:
        for link in links.values():
            link.stop()
        engine.dispose()


DAY = 86400.0


def _decision(store: ConsoleStore, record_id: str, verdict: str, received: float, *, image: bool = True,
              action: bool = False) -> None:
    """An item record as a box publishes it, received at ``received``, with its overlay picture and an action."""
    prefix = "xray/s/l1"
    body = {"record_id": record_id, "site_id": "s", "scanner_id": "l1", "item_id": f"bag-{record_id}",
            "verdict": verdict, "image": {"topic": f"{prefix}/images/bag-{record_id}"}}
    with store.engine.begin() as conn:
        store.ingest_decision(conn, prefix, "b", body, json.dumps(body), received)
        if image:
            store.ingest_image(conn, f"{prefix}/images/bag-{record_id}", prefix, f"bag-{record_id}", b"jpeg",
                               received + 0.5)
        if action:
            store.ingest_action(conn, prefix, {"record_id": record_id, "item_id": f"bag-{record_id}",
                                               "action": "divert", "outcome": "done", "wall": received},
                                received + 1)


def test_prune_keeps_alarms_that_wait_for_a_verdict_however_old(store: ConsoleStore) -> None:
    """Retention deleted every decision older than keep_days, ALARM and UNSCREENED items still waiting for an
    operator's verdict included: an alarm left in the queue over a long shutdown silently left the queue. An item
    that needs a verdict now stays (with its pictures and actions) until it has one; decided and CLEAR items
    follow keep_days as before."""
    from console.store import User

    now = time.time()
    old = now - 100 * DAY
    _decision(store, "old-alarm", "alarm", old, action=True)
    _decision(store, "old-unscreened", "unscreened", old + 1)
    _decision(store, "old-decided", "alarm", old + 2, action=True)
    _decision(store, "old-reopened", "alarm", old + 3)
    _decision(store, "old-clear", "clear", old + 4)
    _decision(store, "new-alarm", "alarm", now - DAY)
    user = User("sam", "supervisor", False, None)
    store.add_verdict("old-decided", "cleared", user, None, "c", None, now=old + 10)
    store.add_verdict("old-reopened", "cleared", user, None, "c", None, now=old + 10)
    store.reopen("old-reopened", user, None)  # back in the queue: it needs a verdict again

    result = store.prune(now - 90 * DAY)

    queue = {v.record_id: v for v in store.items(status="open")}
    assert sorted(queue) == ["new-alarm", "old-alarm", "old-reopened", "old-unscreened"], \
        "an open alarm older than keep_days left the queue without a verdict"
    assert [i.label for i in queue["old-alarm"].images] == ["X-ray overlay"]
    assert store.image(queue["old-alarm"].images[0].id) == ("image/jpeg", b"jpeg")
    assert [(a.action, a.outcome) for a in queue["old-alarm"].actions] == [("divert", "done")]
    assert len(queue["old-unscreened"].images) == 1 and len(queue["old-reopened"].images) == 1
    assert store.item("old-decided") is None and store.item("old-clear") is None
    assert store.counts() == {"items": 4, "open": 4, "images": 4, "rejects": 0}, "the decided and CLEAR pictures went"
    assert (result.items, result.images, result.actions) == (2, 2, 1)
    assert result.kept_open == 3 and result.oldest_open_wall == old
    assert store.open_alarms_before(now - 90 * DAY) == {"xray/s/l1": (3, old)}

    # once decided, the old alarm follows keep_days: the next prune deletes it and its picture
    store.add_verdict("old-alarm", "threat_confirmed", user, None, "c", None)
    again = store.prune(now - 90 * DAY)
    assert store.item("old-alarm") is None and (again.items, again.images, again.actions) == (1, 1, 1)
    assert again.kept_open == 2 and store.counts()["images"] == 3


class _OnePass:
    """The prune loop's stop event, set after the loop's first pass: one prune, run in the test's thread."""

    def __init__(self) -> None:
        self.waits = 0

    def wait(self, timeout: float) -> bool:
        self.waits += 1
        return self.waits > 1


def test_the_prune_warns_once_about_open_alarms_past_keep_days(store: ConsoleStore,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """The console's hourly prune says in its log, once per prune, how many open alarms it kept past keep_days
    and how old the oldest is: the control room learns that its queue holds alarms nobody reviewed in months."""
    import logging
    from types import SimpleNamespace

    from console.service import _pruner

    now = time.time()
    _decision(store, "old-1", "alarm", now - 200 * DAY)
    _decision(store, "old-2", "unscreened", now - 95 * DAY)
    _decision(store, "old-clear", "clear", now - 95 * DAY)

    def one_prune(keep_days: float) -> list[str]:
        caplog.clear()
        parts = SimpleNamespace(store=store, config=SimpleNamespace(database=SimpleNamespace(keep_days=keep_days)))
        with caplog.at_level(logging.INFO, logger="console.service"):
            _pruner(parts, _OnePass())  # type: ignore[arg-type]
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    warnings = one_prune(90)
    assert len(warnings) == 1, f"one warning per prune, got {warnings}"
    assert "2 open alarms older than 90 days kept" in warnings[0] and "200 days" in warnings[0], warnings[0]
    assert [v.record_id for v in store.items(status="open")] == ["old-1", "old-2"]
    assert store.item("old-clear") is None
    assert one_prune(300) == [], "nothing open past keep_days: no warning"


def _sam_and(store: ConsoleStore, *others: tuple[str, str]) -> None:
    store.add_user("sam", None, "supervisor", by="test")
    for login, role in others:
        store.add_user(login, None, role, by="test")


def test_the_last_active_supervisor_cannot_be_demoted_or_disabled(store: ConsoleStore) -> None:
    """Demoting or disabling the only active supervisor left nobody who could manage users (nor re-open a
    verdict) on the page. Such a change is refused with the reason; with another active supervisor it is allowed,
    a supervisor demoting themself included."""
    from console.store import StoreError

    _sam_and(store, ("olga", "operator"), ("carl", "supervisor"))
    store.set_disabled("carl", True, by="sam")  # carl disabled: sam is the last active supervisor
    with pytest.raises(StoreError, match="sam is the last active supervisor: demoting"):
        store.set_role("sam", "operator", by="sam")
    with pytest.raises(StoreError, match="sam is the last active supervisor: disabling"):
        store.set_disabled("sam", True, by="sam")
    sam = store.user("sam")
    assert sam is not None and sam.role == "supervisor" and not sam.disabled, "the refused change was made"
    # changes that leave sam in place stay allowed: an operator disabled, sam "made supervisor" again
    store.set_disabled("olga", True, by="sam")
    store.set_role("sam", "supervisor", by="sam")
    store.set_role("carl", "operator", by="sam")  # a disabled supervisor demoted: no active one less
    # with a second active supervisor, sam may demote himself
    store.set_role("olga", "supervisor", by="sam")
    store.set_disabled("olga", False, by="sam")
    store.set_role("sam", "operator", by="sam")
    assert [(u.login, u.role, u.disabled) for u in store.users()] == [
        ("carl", "operator", True), ("olga", "supervisor", False), ("sam", "operator", False)]
    with pytest.raises(StoreError, match="olga is the last active supervisor"):
        store.set_disabled("olga", True, by="olga")
    actions = [(a["login"], a["action"], a["target"]) for a in store.audit_log()]
    assert ("sam", "user_role", "sam") in actions and ("olga", "user_disable", "olga") not in actions


def test_two_supervisors_demoting_each_other_at_once_leave_one(store: ConsoleStore) -> None:
    """Two supervisors, two requests at the same moment, each demoting the other: a check that reads the users
    and then changes them lets both through (each sees the other still active in its snapshot). Here carl's
    demotion is a transaction still open when sam's starts: sam's check waits for it, then refuses."""
    import threading

    from console.store import StoreError

    _sam_and(store, ("carl", "supervisor"))
    u = store.t.users
    with store.engine.connect() as conn:  # another console's request, committed only after ours has started
        conn.begin()
        conn.execute(update(u).where(u.c.login == "carl").values(role="operator"))
        outcome: list[BaseException | None] = []

        def demote_sam() -> None:
            try:
                store.set_role("sam", "operator", by="carl")
                outcome.append(None)
            except BaseException as exc:  # handed to the test thread
                outcome.append(exc)

        worker = threading.Thread(target=demote_sam)
        worker.start()
        worker.join(0.5)
        waited = not outcome  # the check waited for the other change instead of reading past it
        conn.commit()
    worker.join(15)
    assert outcome and isinstance(outcome[0], StoreError), f"sam was demoted too: {outcome}"
    assert "last active supervisor" in str(outcome[0]) and waited
    assert store.user("sam").role == "supervisor"  # type: ignore[union-attr]
