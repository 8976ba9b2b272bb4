"""The console's store on its real databases (SQLite and PostgreSQL) with payloads no box sends but anyone on the
broker can: what the store keeps of them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_helpers import make_database

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
