"""The console's database: tables (SQLAlchemy Core, any prefix), and the engine for SQLite or PostgreSQL.

Why SQLAlchemy Core and not an ORM: the console writes rows from the MQTT threads and reads them for the page;
plain tables and statements are the whole need, and the same statements run on SQLite (the default, one file,
nothing to set up) and on PostgreSQL (a large control room). Every table name starts with
``database.table_prefix`` so several consoles, or several test runs, share one database without meeting.

SQLite runs in WAL mode with ``synchronous=FULL``: a decision the console has stored (and so acknowledged to the
broker) survives a crash and a power cut; readers (the page) never block the writers (the MQTT threads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url

from console.config import DatabaseConfig

VERDICTS = ("threat_confirmed", "cleared", "sent_to_search")
"""What an operator may decide (contract 3, ``verdict``)."""
ROLES = ("operator", "supervisor")


class Tables:
    """The console's tables under one prefix (``Tables("console_").items`` is the table ``console_items``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.metadata = md = MetaData()
        p = prefix
        # One row per screened item, keyed by the box's item record id (the alarm record is merged in).
        self.items = Table(
            f"{p}items", md,
            Column("record_id", String(64), primary_key=True),
            Column("alarm_record_id", String(64)),
            Column("prefix", String(255), nullable=False),
            Column("broker", String(32), nullable=False),
            Column("site_id", String(64), nullable=False),
            Column("scanner_id", String(64), nullable=False),
            Column("item_id", String(255), nullable=False),
            Column("box_verdict", String(16), nullable=False),
            Column("box_reason", String(64)),
            Column("item_score", Float),
            Column("reasons", Text, nullable=False),
            Column("decided_wall", Float),
            Column("received_wall", Float, nullable=False),
            Column("is_alarm", Boolean, nullable=False),
            Column("image_topic", String(512)),
            Column("payload", Text, nullable=False),
            # the operator's current verdict (denormalised from the verdicts table for the queue's filters)
            Column("verdict", String(32)),
            Column("verdict_id", String(64)),
            Column("verdict_wall", Float),
            Column("operator", String(64)),
            Index(f"{p}items_queue", "is_alarm", "verdict", "received_wall"),
            Index(f"{p}items_lane", "site_id", "scanner_id", "received_wall"),
            Index(f"{p}items_item", "prefix", "item_id"),
            Index(f"{p}items_image", "image_topic"),
        )
        # Overlay pictures: <prefix>/images/<item key>[/<suffix>], raw JPEG bytes.
        self.images = Table(
            f"{p}images", md,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("topic", String(512), nullable=False, unique=True),
            Column("prefix", String(255), nullable=False),
            Column("item_key", String(255), nullable=False),
            Column("suffix", String(255), nullable=False),
            Column("content_type", String(64), nullable=False),
            Column("content", LargeBinary, nullable=False),
            Column("received_wall", Float, nullable=False),
            Index(f"{p}images_item", "item_key", "prefix"),
        )
        # Operator verdicts, and the durable outbox that sends them to the boxes (state pending → sent → acked).
        self.verdicts = Table(
            f"{p}verdicts", md,
            Column("verdict_id", String(64), primary_key=True),
            Column("record_id", String(64), nullable=False),
            Column("prefix", String(255), nullable=False),
            Column("broker", String(32), nullable=False),
            Column("item_id", String(255), nullable=False),
            Column("verdict", String(32), nullable=False),
            Column("operator", String(64), nullable=False),
            Column("role", String(16), nullable=False),
            Column("decided_wall", Float, nullable=False),
            Column("note", Text),
            Column("payload", Text, nullable=False),
            Column("state", String(16), nullable=False),
            Column("sends", Integer, nullable=False, default=0),
            Column("last_sent_wall", Float),
            Column("acked_wall", Float),
            Column("ack_error", Text),
            Column("reopened_by", String(64)),
            Column("reopened_wall", Float),
            Index(f"{p}verdicts_state", "state", "last_sent_wall"),
            Index(f"{p}verdicts_record", "record_id"),
        )
        # One row per box (topic prefix): availability (status topic) and health (health topic).
        self.lanes = Table(
            f"{p}lanes", md,
            Column("prefix", String(255), primary_key=True),
            Column("broker", String(32), nullable=False),
            Column("site_id", String(64)),
            Column("scanner_id", String(64)),
            Column("status", String(16)),
            Column("status_reason", Text),
            Column("status_wall", Float),
            Column("health_status", String(16)),
            Column("health_reason", Text),
            Column("health_wall", Float),
            Column("links", Text),
            Column("last_item_wall", Float),
            Column("last_item_id", String(255)),
        )
        # What the box did with an item (contract 4: divert, beacon, belt stop, release).
        self.actions = Table(
            f"{p}actions", md,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("record_id", String(64)),
            Column("prefix", String(255), nullable=False),
            Column("item_id", String(255)),
            Column("action", String(32)),
            Column("outcome", String(32)),
            Column("detail", Text),
            Column("wall", Float),
            Column("received_wall", Float, nullable=False),
            Index(f"{p}actions_record", "record_id"),
        )
        self.users = Table(
            f"{p}users", md,
            Column("login", String(64), primary_key=True),
            Column("password_hash", Text),
            Column("role", String(16), nullable=False),
            Column("disabled", Boolean, nullable=False, default=False),
            Column("created_wall", Float, nullable=False),
            Column("created_by", String(64), nullable=False),
        )
        # Who did what: sign-ins, verdicts, re-opens, user changes. Never pruned.
        self.audit = Table(
            f"{p}audit", md,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("wall", Float, nullable=False),
            Column("login", String(64), nullable=False),
            Column("action", String(32), nullable=False),
            Column("target", String(255)),
            Column("detail", Text),
            Column("address", String(64)),
        )
        # Messages the console could not read (bad JSON, unknown topic shape): kept, never silently dropped.
        self.rejects = Table(
            f"{p}rejects", md,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("topic", String(512), nullable=False),
            Column("broker", String(32), nullable=False),
            Column("error", Text, nullable=False),
            Column("payload", LargeBinary, nullable=False),
            Column("received_wall", Float, nullable=False),
        )
        # Sessions signed out before their cookie expired: the cookie is signed, not stored, so without this
        # list a copy of it would stay valid after "Sign out" until session_max_age_s (pruned once expired).
        self.ended_sessions = Table(
            f"{p}ended_sessions", md,
            Column("sid", String(64), primary_key=True),
            Column("until_wall", Float, nullable=False),
        )
        # A user's sessions signed in before this time are refused: set when the password changes or the user is
        # disabled (a re-enabled user's old cookie, or one taken with the old password, must not come back).
        self.user_sessions_ended = Table(
            f"{p}user_sessions_ended", md,
            Column("login", String(64), primary_key=True),
            Column("before_wall", Float, nullable=False),
        )
        self.settings = Table(
            f"{p}settings", md,
            Column("key", String(64), primary_key=True),
            Column("value", Text, nullable=False),
        )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def open_engine(config: DatabaseConfig) -> Engine:
    """An engine for ``config.url`` (SQLite: WAL, synchronous FULL, the folder made; PostgreSQL: pooled)."""
    url = make_url(config.url)
    if config.password_file is not None:
        url = url.set(password=config.password_file.read_text(encoding="utf-8").rstrip("\r\n"))
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


def create_tables(engine: Engine, tables: Tables) -> None:
    """Create the tables that do not exist yet (a new console, or a new prefix)."""
    tables.metadata.create_all(engine)


def drop_tables(engine: Engine, tables: Tables) -> None:
    """Drop every table of this prefix (tests clean up with it)."""
    tables.metadata.drop_all(engine)
