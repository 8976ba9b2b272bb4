"""Fault tests: a console killed or a broker restarted loses no decision and no verdict.

Decisions: the console's broker session is persistent and it acknowledges a message only once stored, so what a
box publishes while the console is down (or while the console reconnects after a broker restart) is delivered
when it comes back. Verdicts: stored before the operator's request is answered, sent from the database and sent
again until the box acknowledges, so a verdict given while the broker is down, or not yet acknowledged when the
console is killed, still reaches the box (the box stores a redelivery once, by verdict_id).
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path
from typing import Any

from console_helpers import ConsoleProc, Database, Lane, Subscriber, alarm_decision, session
from publish_helpers import Broker, free_port

PASSWORD = "correct horse 1"


def _wait_item(client: Any, record_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.get(f"/api/items/{record_id}")
        if answer.status_code == 200:
            return dict(answer.json())
        time.sleep(0.1)
    raise AssertionError(f"item {record_id} never stored")


def _setup(tmp_path: Path, db: Database) -> tuple[Broker, ConsoleProc, Lane, Subscriber]:
    broker = Broker(tmp_path / "broker", free_port())
    broker.workdir.mkdir()
    broker.start()
    site = f"f{uuid.uuid4().hex[:6]}"
    console = ConsoleProc(tmp_path, db, broker.port, (f"xray/{site}/+/#",), resend_s=1.0)
    console.add_user("olga", PASSWORD)
    lane = Lane(broker.port, site, "lane1", f"xray/{site}/lane1")
    box = Subscriber(broker.port, f"{lane.prefix}/verdicts").start()
    return broker, console, lane, box


def test_console_killed_loses_no_decision_and_no_verdict(tmp_path: Path, sqlite_db: Database) -> None:
    broker, console, lane, box = _setup(tmp_path, sqlite_db)
    try:
        console.start()
        client: Any = session(console, "olga", PASSWORD)
        first = str(lane.publish_decision(alarm_decision("bag-1", "lane1"))["record_id"])
        _wait_item(client, first, 5)
        given = client.post("/api/verdicts", json={"record_id": first, "verdict": "threat_confirmed"})
        assert given.status_code == 201
        verdict_id = given.json()["verdict_id"]
        console.stop(signal.SIGKILL)  # at once: the verdict may or may not have left; the box has not acked

        # while the console is dead the lane goes on: these must all be there after the restart
        missed = [str(lane.publish_decision(alarm_decision(f"bag-{i}", "lane1"))["record_id"]) for i in range(2, 7)]
        console.start()
        client = session(console, "olga", PASSWORD)
        for record_id in missed:
            assert _wait_item(client, record_id, 10)["box_verdict"] == "alarm"
        queue = {i["record_id"] for i in client.get("/api/items", params={"status": "open"}).json()["items"]}
        assert set(missed) <= queue and first not in queue

        # the unacknowledged verdict is (re)sent after the restart, same verdict_id; once acked, no more
        box.messages.clear()
        got = box.wait_for(1, 10)
        assert got and {m["verdict_id"] for m in got} == {verdict_id}
        box.ack(got[0])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and client.get(f"/api/items/{first}").json()["verdict_state"] != "acked":
            time.sleep(0.1)
        assert client.get(f"/api/items/{first}").json()["verdict_state"] == "acked"
        time.sleep(2.5)  # more than two resend periods
        box.messages.clear()
        assert box.wait_for(1, 1.0) == []
    finally:
        console.stop()
        box.stop()
        lane.close()
        broker.stop(signal.SIGKILL)


def test_broker_restart_loses_no_decision_and_no_verdict(tmp_path: Path, sqlite_db: Database) -> None:
    broker, console, lane, box = _setup(tmp_path, sqlite_db)
    try:
        console.start()
        client: Any = session(console, "olga", PASSWORD)
        first = str(lane.publish_decision(alarm_decision("bag-1", "lane1"))["record_id"])
        _wait_item(client, first, 5)
        lane.close()
        box.stop()

        broker.stop()  # SIGTERM: mosquitto saves its sessions like a service stop
        # the operator decides while the broker is away: the console accepts and keeps it
        given = client.post("/api/verdicts", json={"record_id": first, "verdict": "cleared"})
        assert given.status_code == 201
        verdict_id = given.json()["verdict_id"]
        assert client.get(f"/api/items/{first}").json()["verdict_state"] == "pending"
        time.sleep(1.5)
        broker.start()

        # published right after the restart, before the console has reconnected: queued in its session
        lane = Lane(broker.port, lane.site_id, "lane1", lane.prefix)
        second = str(lane.publish_decision(alarm_decision("bag-2", "lane1"))["record_id"])
        box = Subscriber(broker.port, f"{lane.prefix}/verdicts", client_id=box.client_id).start()
        got = box.wait_for(1, 20)
        assert [m["verdict_id"] for m in got][:1] == [verdict_id], "the verdict given during the outage is lost"
        assert got[0]["record_id"] == first and got[0]["verdict"] == "cleared"
        assert _wait_item(client, second, 20)["box_verdict"] == "alarm"
    finally:
        console.stop()
        box.stop()
        lane.close()
        broker.stop(signal.SIGKILL)


def test_database_refusing_writes_loses_no_decision(tmp_path: Path, sqlite_db: Database) -> None:
    """SQLite locked by another writer for longer than the console's busy timeout (10 s): nothing is
    acknowledged, the batch is retried, and every decision is stored once the database takes writes again."""
    import sqlite3

    broker, console, lane, box = _setup(tmp_path, sqlite_db)
    try:
        console.start()
        client: Any = session(console, "olga", PASSWORD)
        first = str(lane.publish_decision(alarm_decision("bag-1", "lane1"))["record_id"])
        _wait_item(client, first, 5)
        locker = sqlite3.connect(sqlite_db.url.removeprefix("sqlite:///"), timeout=10, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            during = [str(lane.publish_decision(alarm_decision(f"bag-{i}", "lane1"))["record_id"])
                      for i in range(2, 5)]
            time.sleep(12.0)  # past the console's busy timeout: its write fails
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        for record_id in during:
            assert _wait_item(client, record_id, 15)["box_verdict"] == "alarm"
        after = str(lane.publish_decision(alarm_decision("bag-5", "lane1"))["record_id"])
        assert _wait_item(client, after, 10)["box_verdict"] == "alarm", "the console stopped listening"
        assert "the database refused" in (console.workdir / "console.log").read_text(), "the lock was not felt"
    finally:
        console.stop()
        box.stop()
        lane.close()
        broker.stop(signal.SIGKILL)


def test_a_broker_down_at_start_is_said_on_the_page_and_in_the_log(tmp_path: Path, sqlite_db: Database) -> None:
    """A broker that cannot be reached at start (down, wrong port): the console serves the page and says why for
    that broker. It said nothing at all (no log line, an empty reason on the page)."""
    console = ConsoleProc(tmp_path, sqlite_db, free_port(), ("xray/+/+/#",))
    console.add_user("olga", PASSWORD)
    console.start()
    try:
        client: Any = session(console, "olga", PASSWORD)
        deadline = time.monotonic() + 10
        brokers: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            brokers = client.get("/api/lanes").json()["brokers"]
            if brokers and brokers[0]["error"]:
                break
            time.sleep(0.2)
        assert brokers[0]["connected"] is False and "cannot connect" in brokers[0]["error"], brokers
        assert "Connection refused" in brokers[0]["error"]
        assert "site-a" in console.log() and "cannot connect" in console.log()
    finally:
        console.stop()
