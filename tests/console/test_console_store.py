"""The console's store on its real databases (SQLite and PostgreSQL) with payloads no box sends but anyone on the
broker can: what the store keeps of them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_helpers import make_database
from sqlalchemy import select

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
